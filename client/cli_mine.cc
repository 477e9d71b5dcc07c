// `hardneg mine`: reads queries (and optionally positives, labels and query
// ids) from .npy files, mines them in batches over one Mine stream (or one
// MineOnce call per batch), writes JSON or .npy, and reports throughput.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/status_macros.h"
#include "client/cli_commands.h"
#include "client/cli_flags.h"
#include "client/cli_mining_options.h"
#include "client/client.h"
#include "client/fashion_mnist.h"
#include "client/mine_output.h"
#include "format/npy.h"

namespace hardneg::client {
namespace {

constexpr char kCommand[] = "mine";

// The inputs, as read from the .npy files.
struct MineInputs {
  NpyMatrix queries;                              // [n, dim]
  std::optional<NpyInt64Matrix> positives;        // [n, k], -1 = no positive
  std::optional<std::vector<int64_t>> labels;     // [n]
  std::optional<std::vector<int64_t>> query_ids;  // [n]

  size_t size() const { return queries.rows; }

  // The queries [begin, end) as client queries.
  std::vector<Query> Batch(size_t begin, size_t end) const {
    std::vector<Query> batch(end - begin);
    for (size_t i = begin; i < end; ++i) {
      Query& query = batch[i - begin];
      const float* row = queries.data.data() + i * queries.cols;
      query.embedding.assign(row, row + queries.cols);
      if (positives) {
        for (size_t j = 0; j < positives->cols; ++j) {
          const int64_t id = positives->data[i * positives->cols + j];
          if (id != -1) query.positive_ids.push_back(id);
        }
      }
      if (labels) query.label = (*labels)[i];
      if (query_ids) query.query_id = (*query_ids)[i];
    }
    return batch;
  }
};

struct MineRun {
  size_t batch_size = 0;
  size_t max_in_flight = 0;  // unanswered batches on a stream; 0: no limit
  MiningOptions options;
};

size_t NumBatches(size_t n, size_t batch_size) {
  return (n + batch_size - 1) / batch_size;
}

// `status` with "batch b (queries x..y): " before its message.
absl::Status InBatch(const absl::Status& status, size_t batch,
                     size_t batch_size, size_t n) {
  const size_t begin = batch * batch_size;
  const size_t end = std::min(n, begin + batch_size) - 1;
  return absl::Status(status.code(),
                      absl::StrCat("batch ", batch, " (queries ", begin, "..",
                                   end, "): ", status.message()));
}

// Checks that `reply` answers batch `batch` and stores its results.
absl::Status Store(MineReply reply, size_t batch, const MineInputs& inputs,
                   const MineRun& run, MinedQueries* mined) {
  const size_t begin = batch * run.batch_size;
  const size_t end = std::min(inputs.size(), begin + run.batch_size);
  if (reply.request_id != batch) {
    return absl::InternalError(
        absl::StrCat("expected the reply to request ", batch,
                     ", the server answered request ", reply.request_id));
  }
  if (reply.results.size() != end - begin) {
    return absl::InternalError(absl::StrCat(
        "the reply to request ", batch, " has ", reply.results.size(),
        " results for ", end - begin, " queries"));
  }
  for (size_t i = begin; i < end; ++i) {
    mined->results[i] = std::move(reply.results[i - begin]);
    mined->versions[i] = reply.index;
  }
  for (const std::string& shard : reply.missing_shards) {
    if (std::find(mined->missing_shards.begin(), mined->missing_shards.end(),
                  shard) == mined->missing_shards.end()) {
      mined->missing_shards.push_back(shard);
    }
  }
  return absl::OkStatus();
}

// One MineOnce call per batch. `latencies` gets each call's duration.
absl::Status MineUnary(Client& client, const MineInputs& inputs,
                       const MineRun& run, MinedQueries* mined,
                       std::vector<absl::Duration>* latencies) {
  const size_t n = inputs.size();
  for (size_t batch = 0; batch < NumBatches(n, run.batch_size); ++batch) {
    const size_t begin = batch * run.batch_size;
    const std::vector<Query> queries =
        inputs.Batch(begin, std::min(n, begin + run.batch_size));
    const absl::Time start = absl::Now();
    absl::StatusOr<MineReply> reply =
        client.MineOnce(queries, run.options, batch);
    latencies->push_back(absl::Now() - start);
    if (!reply.ok()) return InBatch(reply.status(), batch, run.batch_size, n);
    absl::Status status = Store(*std::move(reply), batch, inputs, run, mined);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

// What the sender and the receiver of a Mine stream share: when each batch
// went out and how many replies came back, so that the sender keeps at most
// `max_in_flight` batches unanswered.
struct StreamProgress {
  absl::Mutex mu;
  std::vector<absl::Time> sent_at ABSL_GUARDED_BY(mu);
  size_t received ABSL_GUARDED_BY(mu) = 0;
  bool stopped ABSL_GUARDED_BY(mu) = false;  // the receiver gave up
};

// Every batch over one Mine stream: a sender thread writes while this
// thread reads, so the server always has the next batch at hand.
// `latencies` gets each batch's time from Send to its reply.
absl::Status MineStreaming(Client& client, const MineInputs& inputs,
                           const MineRun& run, MinedQueries* mined,
                           std::vector<absl::Duration>* latencies) {
  const size_t n = inputs.size();
  const size_t num_batches = NumBatches(n, run.batch_size);
  std::unique_ptr<MineStream> stream = client.OpenStream();

  StreamProgress progress;
  absl::Status send_status;  // written by the sender, read after join
  std::thread sender([&] {
    for (size_t batch = 0; batch < num_batches; ++batch) {
      const size_t begin = batch * run.batch_size;
      const std::vector<Query> queries =
          inputs.Batch(begin, std::min(n, begin + run.batch_size));
      {
        absl::MutexLock lock(&progress.mu);
        auto window_open = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(progress.mu) {
          return progress.stopped || run.max_in_flight == 0 ||
                 batch - progress.received < run.max_in_flight;
        };
        progress.mu.Await(absl::Condition(&window_open));
        if (progress.stopped) return;
        progress.sent_at.push_back(absl::Now());
      }
      send_status = stream->Send(batch, queries, run.options);
      if (!send_status.ok()) return;
    }
    send_status = stream->CloseSend();
  });
  auto stop_sender = [&] {
    absl::MutexLock lock(&progress.mu);
    progress.stopped = true;
  };

  absl::Status receive_status;
  bool stream_ended = false;
  for (size_t batch = 0; batch < num_batches; ++batch) {
    absl::StatusOr<MineReply> reply = stream->Receive();
    const absl::Time received_at = absl::Now();
    if (!reply.ok()) {
      if (FailedRequestId(reply.status())) {
        receive_status = InBatch(reply.status(), batch, run.batch_size, n);
        stream->Cancel();  // this run has failed: unblock a pending Send
      } else {
        stream_ended = true;
        receive_status = absl::UnavailableError(
            absl::StrCat("the server ended the Mine stream after ", batch,
                         " of ", num_batches, " replies"));
      }
      stop_sender();
      break;
    }
    {
      absl::MutexLock lock(&progress.mu);
      latencies->push_back(received_at - progress.sent_at[batch]);
      ++progress.received;
    }
    receive_status = Store(*std::move(reply), batch, inputs, run, mined);
    if (!receive_status.ok()) {
      stream->Cancel();
      stop_sender();
      break;
    }
  }
  sender.join();
  absl::Status final_status = stream->CloseAndFinish();
  // The RPC's own status says best why a stream ended early.
  if (stream_ended && !final_status.ok()) return final_status;
  if (!receive_status.ok()) return receive_status;
  if (!final_status.ok()) return final_status;
  return send_status;
}

absl::Duration Percentile(std::vector<absl::Duration> values, double q) {
  if (values.empty()) return absl::ZeroDuration();
  std::sort(values.begin(), values.end());
  const auto index = static_cast<size_t>(
      std::lround(q * static_cast<double>(values.size() - 1)));
  return values[index];
}

absl::StatusOr<MineInputs> ReadInputs(const std::string& queries_path,
                                      const std::string& positives_path,
                                      const std::string& labels_path,
                                      const std::string& query_ids_path,
                                      std::string* failed_flag) {
  MineInputs inputs;
  *failed_flag = "--queries";
  absl::StatusOr<NpyMatrix> queries = ReadNpyMatrix(queries_path);
  if (!queries.ok()) return queries.status();
  if (queries->rows == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(queries_path, ": holds no queries"));
  }
  inputs.queries = *std::move(queries);
  const size_t n = inputs.queries.rows;
  auto count_mismatch = [&](const std::string& path, size_t rows) {
    return absl::InvalidArgumentError(absl::StrCat(path, " has ", rows,
                                                   " rows but ", queries_path,
                                                   " has ", n, " queries"));
  };
  if (!positives_path.empty()) {
    *failed_flag = "--positives";
    absl::StatusOr<NpyInt64Matrix> positives =
        ReadNpyInt64Matrix(positives_path);
    if (!positives.ok()) return positives.status();
    if (positives->rows != n) {
      return count_mismatch(positives_path, positives->rows);
    }
    inputs.positives = *std::move(positives);
  }
  if (!labels_path.empty()) {
    *failed_flag = "--labels";
    absl::StatusOr<std::vector<int64_t>> labels = ReadNpyInt64(labels_path);
    if (!labels.ok()) return labels.status();
    if (labels->size() != n) return count_mismatch(labels_path, labels->size());
    inputs.labels = *std::move(labels);
  }
  if (!query_ids_path.empty()) {
    *failed_flag = "--query_ids";
    absl::StatusOr<std::vector<int64_t>> ids = ReadNpyInt64(query_ids_path);
    if (!ids.ok()) return ids.status();
    if (ids->size() != n) return count_mismatch(query_ids_path, ids->size());
    inputs.query_ids = *std::move(ids);
  }
  failed_flag->clear();
  return inputs;
}

// Every flag of `hardneg mine` but the server's.
struct MineFlags {
  std::string queries_path, positives_path, labels_path, query_ids_path;
  MiningFlags mining;
  uint32_t batch_size = 256;
  uint32_t max_in_flight = 4;
  bool stream = true;
  std::string output;
  std::string format;  // json, csv or npy; empty: from --output's name
  uint32_t show = 0;
  std::string label_names;
};

void AddMineFlags(FlagSet& flags, MineFlags* mine) {
  flags.String("queries", &mine->queries_path, "Q.npy",
               "Query embeddings, float32 or float16 [n, dim] (required).");
  flags.String("positives", &mine->positives_path, "P.npy",
               "Positive ids per query, int64 [n, k] or [n]; -1 leaves a "
               "slot empty.");
  flags.String("labels", &mine->labels_path, "L.npy",
               "Each query's label, int64 [n]: candidates with it are "
               "excluded.");
  flags.String("query_ids", &mine->query_ids_path, "I.npy",
               "Each query's own id, int64 [n]: excluded from its answer.");
  AddMiningFlags(flags, &mine->mining);
  flags.Uint32("batch_size", &mine->batch_size, "Queries per request (> 0).");
  flags.Uint32("max_in_flight", &mine->max_in_flight,
               "With --stream: at most N batches sent and not yet answered; 0 "
               "sends them all at once.");
  flags.Bool("stream", &mine->stream,
             "Send the batches over one Mine stream; --nostream makes one "
             "MineOnce call per batch.");
  flags.String("output", &mine->output, "FILE",
               "Where to write, by extension: FILE.json; FILE.csv (one row "
               "per negative: query,position,id,score,label,rank,shortfall,"
               "positive_score,index,sequence); or FILE.npy for ids int64 [n, "
               "num_negatives] (padded with -1) plus FILE.scores.npy float32 "
               "(padded with NaN) and, with --return_embeddings, "
               "FILE.embeddings.npy [n, num_negatives, dim]. Any other "
               "extension is refused. Default: JSON to stdout.");
  flags.String("format", &mine->format, "json|csv|npy",
               "Output format; default: --output's extension (json on "
               "stdout). When both are given they must agree.");
  flags.Uint32("show", &mine->show,
               "Print a table of the first N queries' negatives to stdout "
               "(then JSON goes to stdout only with --output).");
  flags.String("label_names", &mine->label_names, "fashion-mnist|FILE",
               "Names for labels in --show: fashion-mnist, or a text file "
               "with one name per line (line i names label i).");
}

// --output's format from its extension (.json, .csv, .npy; anything else
// is refused, so that no file holds a format its name does not say), or
// --format's; both must agree when both are given.
absl::Status ResolveOutputFormat(MineFlags* mine) {
  std::string by_name;
  if (!mine->output.empty()) {
    for (const char* format : {"json", "csv", "npy"}) {
      if (absl::EndsWith(mine->output, absl::StrCat(".", format))) {
        by_name = format;
      }
    }
    if (by_name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--output=", mine->output,
          ": unknown extension; write FILE.json, FILE.csv or FILE.npy"));
    }
  }
  if (!mine->format.empty() && mine->format != "json" &&
      mine->format != "csv" && mine->format != "npy") {
    return absl::InvalidArgumentError(
        absl::StrCat("--format=", mine->format, ": expected json, csv or npy"));
  }
  if (!mine->format.empty() && !by_name.empty() && mine->format != by_name) {
    return absl::InvalidArgumentError(
        absl::StrCat("--format=", mine->format, " but --output=", mine->output,
                     " says ", by_name, ": give one, or make them agree"));
  }
  if (mine->format.empty()) mine->format = by_name.empty() ? "json" : by_name;
  if (mine->format == "npy" && mine->output.empty()) {
    return absl::InvalidArgumentError("--format=npy needs --output FILE.npy");
  }
  return absl::OkStatus();
}

// The mining options, once the flags are consistent; fills in the default
// --format. INVALID_ARGUMENT with the usage error's message otherwise.
absl::StatusOr<MiningOptions> CheckMineFlags(MineFlags* mine) {
  if (mine->queries_path.empty()) {
    return absl::InvalidArgumentError("--queries is required");
  }
  // --num_negatives=0 is reported before --batch_size=0, the other mining
  // options after it.
  if (mine->mining.options.num_negatives != 0 && mine->batch_size == 0) {
    return absl::InvalidArgumentError("--batch_size must be at least 1");
  }
  absl::StatusOr<MiningOptions> options = MiningOptionsFromFlags(mine->mining);
  if (!options.ok()) return options.status();
  HARDNEG_RETURN_IF_ERROR(ResolveOutputFormat(mine));
  if (mine->format == "csv" && options->return_embeddings) {
    return absl::InvalidArgumentError(
        "CSV holds no embeddings: write --return_embeddings to FILE.npy or "
        "FILE.json");
  }
  return options;
}

// The label names --label_names asks for (none without it).
absl::StatusOr<std::vector<std::string>> ReadLabelNames(
    const std::string& label_names_flag) {
  std::vector<std::string> label_names;
  if (label_names_flag == "fashion-mnist") {
    label_names.assign(kFashionMnistClassNames.begin(),
                       kFashionMnistClassNames.end());
  } else if (!label_names_flag.empty()) {
    std::ifstream names(label_names_flag);
    if (!names) {
      return absl::InvalidArgumentError(
          absl::StrCat("--label_names=", label_names_flag, ": cannot open"));
    }
    for (std::string line; std::getline(names, line);) {
      label_names.push_back(line);
    }
  }
  return label_names;
}

// What a run of batches got back, and how long it took.
struct MineRunResult {
  MinedQueries mined;
  std::vector<absl::Duration> latencies;
  absl::Duration elapsed;
};

absl::Status MineAll(Client& client, const MineInputs& inputs,
                     const MineRun& run, bool stream, MineRunResult* result) {
  result->mined.results.resize(inputs.size());
  result->mined.versions.resize(inputs.size());
  const absl::Time start = absl::Now();
  absl::Status status =
      stream
          ? MineStreaming(client, inputs, run, &result->mined,
                          &result->latencies)
          : MineUnary(client, inputs, run, &result->mined, &result->latencies);
  result->elapsed = absl::Now() - start;
  return status;
}

// Writes the results as --format, --output and --show say; on an error,
// `*failed_what` names what could not be written.
absl::Status WriteMined(const MineFlags& mine, const MiningOptions& options,
                        const MinedQueries& mined, std::string* failed_what) {
  if (mine.format == "npy") {
    *failed_what = "--output";
    return WriteMineNpy(mined, options.num_negatives, options.return_embeddings,
                        mine.output);
  }
  if (mine.show > 0 && mine.output.empty()) return absl::OkStatus();
  std::FILE* out =
      mine.output.empty() ? stdout : std::fopen(mine.output.c_str(), "w");
  if (out == nullptr) {
    *failed_what = "--output";
    return absl::ErrnoToStatus(errno,
                               absl::StrCat(mine.output, ": cannot create"));
  }
  absl::Status written = mine.format == "csv" ? WriteMineCsv(mined, out)
                                              : WriteMineJson(mined, out);
  if (out != stdout && std::fclose(out) != 0 && written.ok()) {
    written = absl::ErrnoToStatus(errno, "closing the file failed");
  }
  *failed_what = mine.output.empty() ? "stdout" : mine.output;
  return written;
}

// The throughput summary on stderr, after a note when the index changed
// during the run, and what was written where.
void ReportMineRun(const MineFlags& mine, const MiningOptions& options,
                   const MineRunResult& run) {
  const MinedQueries& mined = run.mined;
  uint64_t negatives = 0;
  uint64_t shortfall = 0;
  for (const QueryResult& result : mined.results) {
    negatives += result.negatives.size();
    shortfall += result.shortfall;
  }
  const size_t n = mined.results.size();
  const double seconds = std::max(absl::ToDoubleSeconds(run.elapsed), 1e-9);
  const ServedVersion& version = mined.versions.back();
  const ServedVersion& first = mined.versions.front();
  if (!mined.missing_shards.empty()) {
    std::cerr << "hardneg mine: partial answers (--allow_partial): they lack "
                 "the candidates of "
              << absl::StrJoin(mined.missing_shards, ", ") << "\n";
  }
  if (first.name != version.name || first.sequence != version.sequence) {
    std::cerr << "hardneg mine: the index changed during the run, from "
              << first.name << " (sequence " << first.sequence << ") to "
              << version.name << " (sequence " << version.sequence
              << "); each result names its version\n";
  }
  std::cerr << absl::StrFormat(
      "hardneg mine: %d queries in %d batches of up to %d over %s in %.3f s: "
      "%.1f queries/s, %.1f negatives/s; request latency p50 %.2f ms, p99 "
      "%.2f ms; %d negatives, shortfall %d; index %s (sequence %d)\n",
      n, run.latencies.size(), mine.batch_size,
      mine.stream ? "one Mine stream" : "MineOnce calls", seconds,
      static_cast<double>(n) / seconds,
      static_cast<double>(negatives) / seconds,
      absl::ToDoubleMilliseconds(Percentile(run.latencies, 0.5)),
      absl::ToDoubleMilliseconds(Percentile(run.latencies, 0.99)), negatives,
      shortfall, version.name, version.sequence);
  if (mine.output.empty()) return;
  if (mine.format == "npy") {
    const MineNpyPaths paths = MineNpyPathsFor(mine.output);
    std::cerr << "hardneg mine: wrote " << paths.ids << " and " << paths.scores
              << (options.return_embeddings ? " and " + paths.embeddings : "")
              << "\n";
  } else {
    std::cerr << "hardneg mine: wrote " << mine.output << "\n";
  }
}

}  // namespace

int RunMineCommand(const std::vector<std::string>& args) {
  ConnectionFlags connection_flags;
  MineFlags mine;
  FlagSet flags(
      kCommand, "--server HOST:PORT --queries Q.npy [flags]",
      "Mines hard negatives for every row of Q.npy, sending --batch_size "
      "queries per request over one Mine stream, and writes one result per "
      "query (JSON on stdout by default). Throughput goes to stderr.");
  AddConnectionFlags(flags, &connection_flags);
  AddMineFlags(flags, &mine);
  if (std::optional<int> done =
          ParseServerCommand(flags, args, connection_flags)) {
    return *done;
  }
  absl::StatusOr<MiningOptions> options = CheckMineFlags(&mine);
  if (!options.ok()) return flags.UsageError(options.status());
  absl::StatusOr<std::vector<std::string>> label_names =
      ReadLabelNames(mine.label_names);
  if (!label_names.ok()) return flags.UsageError(label_names.status());

  std::string failed_flag;
  absl::StatusOr<MineInputs> inputs =
      ReadInputs(mine.queries_path, mine.positives_path, mine.labels_path,
                 mine.query_ids_path, &failed_flag);
  if (!inputs.ok()) return RuntimeError(kCommand, failed_flag, inputs.status());
  MineRunResult run;
  const int mined_exit =
      RunWithClient(kCommand, connection_flags, [&](Client& client) {
        const absl::Status mined = MineAll(
            client, *inputs, {mine.batch_size, mine.max_in_flight, *options},
            mine.stream, &run);
        if (mined.ok()) return kExitOk;
        return RuntimeError(kCommand,
                            absl::StrCat(mine.stream ? "Mine" : "MineOnce",
                                         " on ", connection_flags.server),
                            mined);
      });
  if (mined_exit != kExitOk) return mined_exit;
  std::string failed_what;
  const absl::Status written =
      WriteMined(mine, *options, run.mined, &failed_what);
  if (!written.ok()) return RuntimeError(kCommand, failed_what, written);
  if (mine.show > 0) {
    WriteMineTable(run.mined, inputs->labels.value_or(std::vector<int64_t>{}),
                   *label_names, mine.show, stdout);
    std::fflush(stdout);
  }
  ReportMineRun(mine, *options, run);
  return kExitOk;
}

}  // namespace hardneg::client
