// Unit tests of the `hardneg` CLI library (client/cli_*.h, mine_output.h,
// info_output.h): flag parsing, usage errors and their exit codes, the
// mining options the flags make, and the JSON, .npy and text outputs. No
// server: the commands are run up to their first RPC, or make-checkpoint in
// a temporary directory.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#include "client/cli_commands.h"
#include "client/cli_flags.h"
#include "client/cli_json.h"
#include "client/cli_mining_options.h"
#include "client/info_output.h"
#include "client/mine_output.h"
#include "format/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace hardneg::client {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// A command's exit code and what it wrote.
struct Ran {
  int exit_code;
  std::string out;
  std::string err;
};

using Command = int (*)(const std::vector<std::string>&);

Ran RunCommand(Command command, const std::vector<std::string>& args) {
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int exit_code = command(args);
  std::fflush(stdout);
  Ran ran{exit_code, "", ""};
  ran.out = testing::internal::GetCapturedStdout();
  ran.err = testing::internal::GetCapturedStderr();
  return ran;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

class TempDir : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(testing::TempDir()) /
           testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  std::string Path(const std::string& name) const { return dir_ / name; }
  std::filesystem::path dir_;
};

// --- FlagSet ----------------------------------------------------------

struct Parsed {
  std::string text = "default";
  uint32_t count = 7;
  uint64_t big = 0;
  float x = 1.5f;
  std::optional<float> maybe;
  bool on = true;
};

class FlagSetTest : public testing::Test {
 protected:
  FlagSetTest() : flags_("demo", "[flags]", "A demo.") {
    flags_.String("text", &v_.text, "T", "Some text.");
    flags_.Uint32("count", &v_.count, "A count.");
    flags_.Uint64("big", &v_.big, "A big one.");
    flags_.Float("x", &v_.x, "A float.");
    flags_.OptionalFloat("maybe", &v_.maybe, "Maybe a float.");
    flags_.Bool("on", &v_.on, "A switch.");
  }
  absl::Status Parse(const std::vector<std::string>& args) {
    return flags_.Parse(args);
  }
  Parsed v_;
  FlagSet flags_;
};

TEST_F(FlagSetTest, AcceptsEveryForm) {
  ASSERT_TRUE(Parse({"--text=a b", "--count", "12", "-big=18446744073709551615",
                     "--x", "-2.5e1", "--maybe=0.25", "--noon"})
                  .ok());
  EXPECT_EQ(v_.text, "a b");
  EXPECT_EQ(v_.count, 12u);
  EXPECT_EQ(v_.big, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(v_.x, -25.0f);
  EXPECT_EQ(v_.maybe, 0.25f);
  EXPECT_FALSE(v_.on);
  EXPECT_TRUE(flags_.IsSet("count"));
  EXPECT_TRUE(flags_.IsSet("on"));
}

TEST_F(FlagSetTest, BooleanSpellings) {
  for (const char* yes :
       {"--on", "--on=true", "--on=1", "--on=yes", "--on=TRUE"}) {
    v_.on = false;
    ASSERT_TRUE(Parse({yes}).ok()) << yes;
    EXPECT_TRUE(v_.on) << yes;
  }
  for (const char* no : {"--noon", "--on=false", "--on=0", "--on=no"}) {
    v_.on = true;
    ASSERT_TRUE(Parse({no}).ok()) << no;
    EXPECT_FALSE(v_.on) << no;
  }
  EXPECT_EQ(Parse({"--on=maybe"}).message(),
            "--on=maybe: expected true or false");
}

TEST_F(FlagSetTest, UnsetFlagsKeepDefaults) {
  ASSERT_TRUE(Parse({}).ok());
  EXPECT_EQ(v_.text, "default");
  EXPECT_EQ(v_.count, 7u);
  EXPECT_FALSE(v_.maybe.has_value());
  EXPECT_FALSE(flags_.IsSet("count"));
}

TEST_F(FlagSetTest, BadValuesNameTheFlag) {
  EXPECT_EQ(Parse({"--count=abc"}).message(),
            "--count=abc: expected an integer from 0 to 4294967295");
  EXPECT_EQ(Parse({"--count=4294967296"}).message(),
            "--count=4294967296: expected an integer from 0 to 4294967295");
  EXPECT_EQ(Parse({"--count=-1"}).message(),
            "--count=-1: expected an integer from 0 to 4294967295");
  EXPECT_EQ(Parse({"--big=-1"}).message(),
            "--big=-1: expected a non-negative integer");
  EXPECT_EQ(Parse({"--big=1.5"}).message(),
            "--big=1.5: expected a non-negative integer");
  EXPECT_EQ(Parse({"--x=nan"}).message(), "--x=nan: expected a finite number");
  EXPECT_EQ(Parse({"--x=inf"}).message(), "--x=inf: expected a finite number");
  EXPECT_EQ(Parse({"--maybe="}).message(),
            "--maybe=: expected a finite number");
  EXPECT_EQ(Parse({"--maybe=-inf"}).message(),
            "--maybe=-inf: expected a finite number");
}

TEST_F(FlagSetTest, UnknownMissingAndPositional) {
  EXPECT_EQ(Parse({"--nope=1"}).message(), "unknown flag --nope");
  EXPECT_EQ(Parse({"--notext"}).message(), "unknown flag --notext");
  EXPECT_EQ(Parse({"--count"}).message(), "--count needs a value (--count=N)");
  EXPECT_EQ(Parse({"extra"}).message(),
            "unexpected argument 'extra' (flags are --name=value)");
  EXPECT_EQ(Parse({"--"}).message(),
            "unexpected argument '--' (flags are --name=value)");
}

TEST_F(FlagSetTest, PositionalsWhenAsked) {
  std::vector<std::string> positionals;
  flags_.Positionals(&positionals);
  ASSERT_TRUE(Parse({"a", "--count=3", "b"}).ok());
  EXPECT_EQ(positionals, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(v_.count, 3u);
}

TEST_F(FlagSetTest, HelpStopsParsing) {
  for (const char* help : {"--help", "-h", "-help", "help"}) {
    FlagSet flags("demo", "", "");
    uint32_t count = 0;
    flags.Uint32("count", &count, "");
    ASSERT_TRUE(flags.Parse({help, "--bogus"}).ok()) << help;
    EXPECT_TRUE(flags.help_requested()) << help;
  }
}

TEST_F(FlagSetTest, UsageListsFlagsWithDefaults) {
  const std::string usage = flags_.Usage();
  EXPECT_THAT(usage, StartsWith("usage: hardneg demo [flags]\n\nA demo.\n\n"
                                "flags:\n  --text T  (default: default)\n"));
  EXPECT_THAT(usage, HasSubstr("  --count N  (default: 7)\n      A count.\n"));
  EXPECT_THAT(usage, HasSubstr("  --x X  (default: 1.5)\n"));
  EXPECT_THAT(usage, HasSubstr("  --maybe X  (default: unset)\n"));
  EXPECT_THAT(usage, HasSubstr("  --on  (default: true)\n"));
  EXPECT_THAT(usage, HasSubstr("  --help\n      Print this text.\n"));
}

// --- Mining options -----------------------------------------------------

TEST(MiningOptionsTest, FromFlags) {
  FlagSet flags("mine", "", "");
  MiningFlags mining;
  AddMiningFlags(flags, &mining);
  ASSERT_TRUE(flags
                  .Parse({"--num_negatives=3", "--range_min=2", "--range_max=5",
                          "--sampling=softmax", "--temperature=0.5", "--seed=9",
                          "--max_score=1", "--return_embeddings", "--nprobe=4"})
                  .ok());
  absl::StatusOr<MiningOptions> options = MiningOptionsFromFlags(mining);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_EQ(options->num_negatives, 3u);
  EXPECT_EQ(options->range_min, 2u);
  EXPECT_EQ(options->range_max, 5u);
  EXPECT_EQ(options->sampling, Sampling::kSoftmax);
  EXPECT_EQ(options->temperature, 0.5f);
  EXPECT_EQ(options->seed, 9u);
  EXPECT_EQ(options->max_score, 1.0f);
  EXPECT_FALSE(options->min_score.has_value());
  EXPECT_TRUE(options->return_embeddings);
  EXPECT_EQ(options->nprobe, 4u);
}

TEST(MiningOptionsTest, RejectsInconsistentFlags) {
  MiningFlags mining;
  mining.options.num_negatives = 0;
  EXPECT_EQ(MiningOptionsFromFlags(mining).status().message(),
            "--num_negatives must be at least 1");
  mining.options.num_negatives = 3;
  mining.options.range_min = 5;
  mining.options.range_max = 7;
  EXPECT_EQ(MiningOptionsFromFlags(mining).status().message(),
            "--range_max (7) must be at least --range_min + --num_negatives "
            "(5 + 3 = 8), or 0 for exactly that");
  mining.options.range_max = 8;
  EXPECT_TRUE(MiningOptionsFromFlags(mining).ok());
  mining.sampling = "best";
  EXPECT_EQ(MiningOptionsFromFlags(mining).status().message(),
            "--sampling=best: expected top, uniform or softmax");
  mining.sampling = "uniform";
  mining.options.temperature = -1;
  EXPECT_EQ(MiningOptionsFromFlags(mining).status().message(),
            "--temperature is -1; it must be a finite value >= 0 (0 means "
            "1.0)");
  // The checks are the domain's: the CLI once missed NaN temperatures.
  mining.options.temperature = std::nanf("");
  EXPECT_EQ(MiningOptionsFromFlags(mining).status().code(),
            absl::StatusCode::kInvalidArgument);
  mining.options.temperature = 0;
  mining.options.relative_margin = std::numeric_limits<float>::infinity();
  EXPECT_EQ(MiningOptionsFromFlags(mining).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The server's limits are the server's: the CLI does not refuse what a
// server configured with higher limits would accept.
TEST(MiningOptionsTest, LeavesLimitsToTheServer) {
  MiningFlags mining;
  mining.options.num_negatives = MinerLimits().max_negatives + 1;
  EXPECT_TRUE(MiningOptionsFromFlags(mining).ok());
}

// --- Commands up to their first RPC: usage errors exit 2 ---------------

TEST(CommandsTest, MineUsageErrors) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--queries=q.npy"}, "--server is required"},
      {{"--server=h:1"}, "--queries is required"},
      {{"--server=h:1", "--queries=q.npy", "--temperature=nan"},
       "--temperature=nan: expected a finite number"},
      {{"--server=h:1", "--queries=q.npy", "--batch_size=0"},
       "--batch_size must be at least 1"},
      {{"--server=h:1", "--queries=q.npy", "--num_negatives=0",
        "--batch_size=0"},
       "--num_negatives must be at least 1"},
      {{"--server=h:1", "--queries=q.npy", "--format=npy"},
       "--format=npy needs --output FILE.npy"},
      {{"--server=h:1", "--queries=q.npy", "--format=xml"},
       "--format=xml: expected json, csv or npy"},
      {{"--server=h:1", "--queries=q.npy", "--output=o.txt"},
       "--output=o.txt: unknown extension; write FILE.json, FILE.csv or "
       "FILE.npy"},
      {{"--server=h:1", "--queries=q.npy", "--output=o.csv", "--format=json"},
       "--format=json but --output=o.csv says csv: give one, or make them "
       "agree"},
      {{"--server=h:1", "--queries=q.npy", "--output=o.csv",
        "--return_embeddings"},
       "CSV holds no embeddings: write --return_embeddings to FILE.npy or "
       "FILE.json"},
      {{"--server=h:1", "--queries=q.npy", "--step=3"}, "unknown flag --step"},
      {{"--server=h:1", "--timeout=-1", "--queries=q.npy"},
       "--timeout must not be negative"},
  };
  for (const auto& [args, message] : cases) {
    const Ran ran = RunCommand(RunMineCommand, args);
    EXPECT_EQ(ran.exit_code, kExitUsageError) << message;
    EXPECT_EQ(ran.err, "hardneg mine: " + message +
                           "\nRun 'hardneg mine --help' for usage.\n");
    EXPECT_EQ(ran.out, "");
  }
}

TEST(CommandsTest, HelpGoesToStdout) {
  for (auto* command : {RunInfoCommand, RunMineCommand, RunPublishCommand,
                        RunMakeCheckpointCommand}) {
    const Ran ran = RunCommand(command, {"--help"});
    EXPECT_EQ(ran.exit_code, kExitOk);
    EXPECT_THAT(ran.out, StartsWith("usage: hardneg "));
    EXPECT_EQ(ran.err, "");
  }
  EXPECT_THAT(RunCommand(RunMineCommand, {"--help"}).out,
              HasSubstr("  --batch_size N  (default: 256)\n"));
}

TEST(CommandsTest, PublishAndInfoUsageErrors) {
  Ran ran = RunCommand(RunPublishCommand, {"--server=h:1", "a", "b"});
  EXPECT_EQ(ran.exit_code, kExitUsageError);
  EXPECT_THAT(ran.err, HasSubstr("expected one checkpoint directory, got 2"));
  ran = RunCommand(RunPublishCommand,
                   {"--server=h:1", "--embeddings=e.npy", "--ids=i.npy"});
  EXPECT_EQ(ran.exit_code, kExitUsageError);
  EXPECT_THAT(ran.err, HasSubstr("--name is required with --embeddings"));
  ran = RunCommand(RunInfoCommand, {"--server=h:1", "--format=yaml"});
  EXPECT_EQ(ran.exit_code, kExitUsageError);
  EXPECT_THAT(ran.err, HasSubstr("--format=yaml: expected text or json"));
}

TEST(CommandsTest, MineMissingQueriesIsARuntimeError) {
  const Ran ran = RunCommand(
      RunMineCommand, {"--server=127.0.0.1:1", "--queries=/nonexistent/q.npy"});
  EXPECT_EQ(ran.exit_code, kExitRuntimeError);
  EXPECT_THAT(ran.err, StartsWith("hardneg mine: --queries: NOT_FOUND"));
}

// --- make-checkpoint ------------------------------------------------------

class MakeCheckpointTest : public TempDir {
 protected:
  void WriteInputs(const std::vector<float>& embeddings, size_t dim,
                   const std::vector<int64_t>& ids) {
    ASSERT_TRUE(WriteNpyMatrix(Path("e.npy"), embeddings.data(),
                               embeddings.size() / dim, dim)
                    .ok());
    ASSERT_TRUE(WriteNpyInt64(Path("i.npy"), ids).ok());
  }
  Ran Make(const std::string& name,
           const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {
        "--out",        Path("ckpts"), "--name", name,         "--step=4",
        "--embeddings", Path("e.npy"), "--ids",  Path("i.npy")};
    args.insert(args.end(), extra.begin(), extra.end());
    return RunCommand(RunMakeCheckpointCommand, args);
  }
};

TEST_F(MakeCheckpointTest, WritesACheckpoint) {
  WriteInputs({1, 2, 3, 4, 5, 6}, 2, {10, 11, 12});
  const Ran ran = Make("run");
  ASSERT_EQ(ran.exit_code, kExitOk) << ran.err;
  EXPECT_EQ(ran.out, "wrote checkpoint " + Path("ckpts") + "/run: 3 x 2 from " +
                         Path("e.npy") + ", metric inner_product, step 4\n");
  EXPECT_THAT(ReadFile(Path("ckpts/run/manifest.json")),
              HasSubstr("\"step\": 4"));
  const Ran again = Make("run");
  EXPECT_EQ(again.exit_code, kExitRuntimeError);
  EXPECT_THAT(again.err, HasSubstr("exists; --force replaces it"));
  EXPECT_THAT(Make("run", {"--force"}).out,
              HasSubstr("(replaced the previous one)"));
}

// Off a terminal, a large checkpoint's read and write show a line at each
// tenth passed, ending at 100%; stdout says the same as ever.
TEST_F(MakeCheckpointTest, ShowsSparseProgressLinesForALargeCheckpoint) {
  constexpr size_t kRows = 160000;
  constexpr size_t kDim = 32;  // 20 MB of floats
  std::vector<float> embeddings(kRows * kDim, 0.5f);
  std::vector<int64_t> ids(kRows);
  for (size_t i = 0; i < kRows; ++i) ids[i] = static_cast<int64_t>(i);
  WriteInputs(embeddings, kDim, ids);
  const Ran ran = Make("big");
  ASSERT_EQ(ran.exit_code, kExitOk) << ran.err;
  EXPECT_EQ(ran.out, "wrote checkpoint " + Path("ckpts") +
                         "/big: 160000 x 32 from " + Path("e.npy") +
                         ", metric inner_product, step 4\n");
  for (const std::string& what :
       {"reading " + Path("e.npy"), "writing " + Path("ckpts") + "/big"}) {
    const std::string prefix = "hardneg make-checkpoint: " + what + " ";
    // Reads and writes go by 8 MiB, so some tenths pass unseen.
    const size_t first = ran.err.find(prefix);
    const size_t last = ran.err.find(prefix + "100% of ");
    EXPECT_NE(first, std::string::npos) << ran.err;
    EXPECT_NE(last, std::string::npos) << ran.err;
    EXPECT_LT(first, last) << ran.err;
  }
  // At most one line a tenth for each step.
  EXPECT_LE(std::count(ran.err.begin(), ran.err.end(), '\n'), 20) << ran.err;
}

// A small checkpoint shows no progress at all.
TEST_F(MakeCheckpointTest, ShowsNoProgressForASmallCheckpoint) {
  WriteInputs({1, 2, 3, 4, 5, 6}, 2, {10, 11, 12});
  const Ran ran = Make("small");
  ASSERT_EQ(ran.exit_code, kExitOk) << ran.err;
  EXPECT_EQ(ran.err, "");
}

TEST_F(MakeCheckpointTest, RejectsWhatTheServerWould) {
  WriteInputs({1, 2, 3, 4, 5, 6}, 2, {10, 11, 10});
  Ran ran = Make("dup");
  EXPECT_EQ(ran.exit_code, kExitRuntimeError);
  EXPECT_THAT(ran.err, HasSubstr("duplicate id 10 at rows 0 and 2"));
  EXPECT_FALSE(std::filesystem::exists(Path("ckpts/dup")));

  WriteInputs({1, 2, 3, std::nanf(""), 5, 6}, 2, {10, 11, 12});
  ran = Make("nan");
  EXPECT_EQ(ran.exit_code, kExitRuntimeError);
  EXPECT_THAT(ran.err,
              HasSubstr("non-finite value at row 1 (id 11), column 1"));
}

TEST_F(MakeCheckpointTest, UsageErrors) {
  Ran ran = RunCommand(RunMakeCheckpointCommand, {"--out=x", "--name=y"});
  EXPECT_EQ(ran.exit_code, kExitUsageError);
  EXPECT_THAT(ran.err, HasSubstr("no candidates: give --embeddings and --ids, "
                                 "or --fashion_mnist"));
  ran = RunCommand(RunMakeCheckpointCommand, {"--fashion_mnist", "--out=x",
                                              "--name=y", "--metric=cosine"});
  EXPECT_EQ(ran.exit_code, kExitUsageError);
  EXPECT_THAT(ran.err, HasSubstr("--metric: "));
  ran = RunCommand(RunMakeCheckpointCommand, {"--fashion_mnist", "--name=y"});
  EXPECT_THAT(ran.err, HasSubstr("--out is required"));
}

// --- Output formats -----------------------------------------------------

MinedQueries TwoQueries() {
  MinedQueries mined;
  QueryResult first;
  first.negatives = {{7, 0.1f, 2, 0, {}}, {-3, -1.25e-8f, -1, 1, {}}};
  first.positive_score = 0.3f;
  QueryResult second;
  second.negatives = {{9, std::numeric_limits<float>::quiet_NaN(), 0, 4, {}}};
  second.shortfall = 1;
  mined.results = {first, second};
  mined.versions = {{"v1", 3}, {"v1", 3}};
  return mined;
}

std::string MineJson(const MinedQueries& mined) {
  std::FILE* file = std::tmpfile();
  EXPECT_TRUE(WriteMineJson(mined, file).ok());
  std::rewind(file);
  std::string text;
  char buffer[4096];
  for (size_t n; (n = std::fread(buffer, 1, sizeof(buffer), file)) > 0;) {
    text.append(buffer, n);
  }
  std::fclose(file);
  return text;
}

TEST(MineOutputTest, JsonOneResultPerLine) {
  EXPECT_EQ(MineJson(TwoQueries()),
            "{\"index\": {\"name\": \"v1\", \"sequence\": 3}, "
            "\"num_queries\": 2, \"results\": [\n"
            "{\"query\": 0, \"negatives\": [{\"id\": 7, \"score\": 0.1, "
            "\"label\": 2, \"rank\": 0}, {\"id\": -3, \"score\": -1.25e-08, "
            "\"label\": -1, \"rank\": 1}], \"shortfall\": 0, "
            "\"positive_score\": 0.3},\n"
            "{\"query\": 1, \"negatives\": [{\"id\": 9, \"score\": null, "
            "\"label\": 0, \"rank\": 4}], \"shortfall\": 1, "
            "\"positive_score\": null}\n"
            "]}\n");
}

TEST(MineOutputTest, JsonNamesEachVersionAfterASwap) {
  MinedQueries mined = TwoQueries();
  mined.versions[1] = {"v2", 4};
  mined.results[0].negatives[0].embedding = {1.5f, 0.1f};
  const std::string json = MineJson(mined);
  EXPECT_THAT(json, StartsWith("{\"index\": {\"name\": \"v2\", "
                               "\"sequence\": 4}"));
  EXPECT_THAT(json, HasSubstr("\"embedding\": [1.5, 0.1]}"));
  EXPECT_THAT(json, HasSubstr("\"positive_score\": 0.3, \"index\": "
                              "{\"name\": \"v1\", \"sequence\": 3}},\n"));
}

TEST(MineOutputTest, TableNamesLabels) {
  std::FILE* file = std::tmpfile();
  WriteMineTable(TwoQueries(), {1}, {"zero", "one", "two"}, 1, file);
  std::rewind(file);
  char buffer[4096];
  const size_t n = std::fread(buffer, 1, sizeof(buffer), file);
  std::fclose(file);
  EXPECT_EQ(std::string(buffer, n),
            "query 0: one (1), its class excluded, p = 0.3000:\n"
            "   rank          id  label                          score\n"
            "      0           7  two (2)                       0.1000\n"
            "      1          -3  -1                           -0.0000\n");
}

class MineNpyTest : public TempDir {};

TEST_F(MineNpyTest, PadsIdsAndScores) {
  ASSERT_TRUE(WriteMineNpy(TwoQueries(), 2, false, Path("out.npy")).ok());
  const std::string ids = ReadFile(Path("out.npy"));
  EXPECT_THAT(ids, HasSubstr("'descr': '<i8'"));
  EXPECT_THAT(ids, HasSubstr("'shape': (2, 2)"));
  ASSERT_GE(ids.size(), 32u);
  std::vector<int64_t> values(4);
  std::memcpy(values.data(), ids.data() + ids.size() - 32, 32);
  EXPECT_EQ(values, (std::vector<int64_t>{7, -3, 9, -1}));
  absl::StatusOr<NpyMatrix> scores = ReadNpyMatrix(Path("out.scores.npy"));
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_EQ(scores->data[0], 0.1f);
  EXPECT_TRUE(std::isnan(scores->data[2]));
  EXPECT_TRUE(std::isnan(scores->data[3]));
  EXPECT_FALSE(std::filesystem::exists(Path("out.embeddings.npy")));
}

TEST_F(MineNpyTest, RejectsMoreNegativesThanAskedFor) {
  EXPECT_EQ(WriteMineNpy(TwoQueries(), 1, false, Path("x.npy")).message(),
            "query 0 got 2 negatives, more than the 1 asked for");
}

TEST(MineOutputTest, NpyPaths) {
  const MineNpyPaths paths = MineNpyPathsFor("dir/neg.npy");
  EXPECT_EQ(paths.scores, "dir/neg.scores.npy");
  EXPECT_EQ(paths.embeddings, "dir/neg.embeddings.npy");
  EXPECT_EQ(MineNpyPathsFor("o.bin").scores, "o.bin.scores.npy");
}

TEST(JsonTest, StringsAndNumbers) {
  EXPECT_EQ(JsonString("a\"b\\c\nd\te\x01"),
            "\"a\\\"b\\\\c\\nd\\u0009e\\u0001\"");
  const nlohmann::ordered_json value = {
      {"z", 1}, {"a", -2}, {"f", 0.1}, {"list", {true, nullptr, "x"}}};
  EXPECT_EQ(JsonText(value, JsonFloats::kSixDigits),
            "{\"z\": 1, \"a\": -2, \"f\": 0.1, \"list\": [true, null, \"x\"]}");
  EXPECT_EQ(JsonText(nlohmann::ordered_json(1.0 / 3), JsonFloats::kSixDigits),
            "0.333333");
  EXPECT_EQ(JsonText(nlohmann::ordered_json(double{1.0f / 3}),
                     JsonFloats::kShortestFloat),
            "0.33333334");
  EXPECT_EQ(
      JsonText(nlohmann::ordered_json(std::nan("")), JsonFloats::kSixDigits),
      "null");
}

TEST(InfoOutputTest, JsonAndText) {
  IndexInfo info;
  info.version = {"run \"1\"", 2};
  info.size = 40;
  info.dim = 8;
  info.metric = "l2";
  info.index_type = "Flat";
  info.scan = "int8";
  info.build_state = "serving";
  info.step = 5;
  info.age_seconds = 1234567.25;
  info.build_progress = 0.5;
  EXPECT_EQ(IndexInfoJsonLine(info),
            "{\"version\": {\"name\": \"run \\\"1\\\"\", \"sequence\": 2}, "
            "\"size\": 40, \"dim\": 8, \"metric\": \"l2\", \"index_type\": "
            "\"Flat\", \"scan\": \"int8\", \"build_state\": \"serving\", "
            "\"step\": 5, "
            "\"has_labels\": false, \"age_seconds\": 1.23457e+06, "
            "\"building\": \"\", \"build_progress\": 0.5, \"last_rejected\": "
            "\"\", \"rejected_total\": 0}\n");
  info.building = "run2";
  info.rejected_total = 1;
  info.last_rejected = "bad";
  const std::string text = IndexInfoText(info);
  EXPECT_THAT(text, StartsWith("version:      run \"1\"\nsequence:     2\n"));
  EXPECT_THAT(text, HasSubstr("index_type:   Flat\nscan:         int8\n"));
  EXPECT_THAT(text, HasSubstr("age:          1234567.2 s\n"
                              "building:     run2 (50%)\n"
                              "rejected:     1, last: bad\n"));
}

}  // namespace
}  // namespace hardneg::client
