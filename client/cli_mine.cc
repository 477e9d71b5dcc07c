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
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cli_commands.h"
#include "client/cli_flags.h"
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

}  // namespace

int RunMineCommand(const std::vector<std::string>& args) {
  ServerFlags server_flags;
  std::string queries_path, positives_path, labels_path, query_ids_path;
  std::string sampling = "top", output, format, label_names_flag;
  uint32_t show = 0;
  uint32_t batch_size = 256;
  uint32_t max_in_flight = 4;
  bool stream = true;
  MiningOptions options;
  FlagSet flags(
      kCommand, "--server HOST:PORT --queries Q.npy [flags]",
      "Mines hard negatives for every row of Q.npy, sending --batch_size "
      "queries per request over one Mine stream, and writes one result per "
      "query (JSON on stdout by default). Throughput goes to stderr.");
  AddServerFlags(flags, &server_flags);
  flags.String("queries", &queries_path, "Q.npy",
               "Query embeddings, float32 or float16 [n, dim] (required).");
  flags.String("positives", &positives_path, "P.npy",
               "Positive ids per query, int64 [n, k] or [n]; -1 leaves a "
               "slot empty.");
  flags.String("labels", &labels_path, "L.npy",
               "Each query's label, int64 [n]: candidates with it are "
               "excluded.");
  flags.String("query_ids", &query_ids_path, "I.npy",
               "Each query's own id, int64 [n]: excluded from its answer.");
  flags.Uint32("num_negatives", &options.num_negatives,
               "Negatives per query (> 0).");
  flags.Uint32("range_min", &options.range_min,
               "First rank of the window among the survivors.");
  flags.Uint32("range_max", &options.range_max,
               "End of the rank window (exclusive); 0 means range_min + "
               "num_negatives.");
  flags.OptionalFloat("max_score", &options.max_score,
                      "Drop candidates scoring above this.");
  flags.OptionalFloat("min_score", &options.min_score,
                      "Drop candidates scoring below this.");
  flags.OptionalFloat("absolute_margin", &options.absolute_margin,
                      "Keep this far (in score) from the weakest positive.");
  flags.OptionalFloat("relative_margin", &options.relative_margin,
                      "Keep this fraction of |p| away from the weakest "
                      "positive p.");
  flags.String("sampling", &sampling, "top|uniform|softmax",
               "How to pick num_negatives from the window.");
  flags.Float("temperature", &options.temperature,
              "Softmax temperature (>= 0); 0 means 1.0.");
  flags.Uint64("seed", &options.seed, "Seed for uniform and softmax sampling.");
  flags.Bool("return_embeddings", &options.return_embeddings,
             "Return each negative's stored embedding.");
  flags.Uint64("min_index_sequence", &options.min_index_sequence,
               "Refuse answers from an index older than this sequence.");
  flags.Uint32("nprobe", &options.nprobe,
               "IVF lists to probe (more: better recall, slower); 0 keeps "
               "the server's --nprobe.");
  flags.Uint32("batch_size", &batch_size, "Queries per request (> 0).");
  flags.Uint32("max_in_flight", &max_in_flight,
               "With --stream: at most N batches sent and not yet answered; 0 "
               "sends them all at once.");
  flags.Bool("stream", &stream,
             "Send the batches over one Mine stream; --nostream makes one "
             "MineOnce call per batch.");
  flags.String("output", &output, "FILE",
               "Where to write: FILE.json, or FILE.npy for ids int64 [n, "
               "num_negatives] (padded with -1) plus FILE.scores.npy float32 "
               "(padded with NaN) and, with --return_embeddings, "
               "FILE.embeddings.npy [n, num_negatives, dim]. Default: stdout.");
  flags.String("format", &format, "json|npy",
               "Output format; default: npy when --output ends in .npy, "
               "otherwise json.");

  flags.Uint32("show", &show,
               "Print a table of the first N queries' negatives to stdout "
               "(then JSON goes to stdout only with --output).");
  flags.String("label_names", &label_names_flag, "fashion-mnist|FILE",
               "Names for labels in --show: fashion-mnist, or a text file "
               "with one name per line (line i names label i).");

  if (std::optional<int> done = ParseServerCommand(flags, args, server_flags)) {
    return *done;
  }
  if (queries_path.empty()) return flags.UsageError("--queries is required");
  if (options.num_negatives == 0) {
    return flags.UsageError("--num_negatives must be at least 1");
  }
  if (batch_size == 0) {
    return flags.UsageError("--batch_size must be at least 1");
  }
  if (options.range_max != 0 &&
      uint64_t{options.range_max} <
          uint64_t{options.range_min} + options.num_negatives) {
    return flags.UsageError(absl::StrCat(
        "--range_max=", options.range_max, " leaves a window smaller than ",
        "--num_negatives=", options.num_negatives,
        " from --range_min=", options.range_min));
  }
  if (sampling == "top") {
    options.sampling = Sampling::kTop;
  } else if (sampling == "uniform") {
    options.sampling = Sampling::kUniform;
  } else if (sampling == "softmax") {
    options.sampling = Sampling::kSoftmax;
  } else {
    return flags.UsageError(absl::StrCat("--sampling=", sampling,
                                         ": expected top, uniform or softmax"));
  }
  if (options.temperature < 0) {
    return flags.UsageError("--temperature must not be negative");
  }
  if (format.empty()) format = absl::EndsWith(output, ".npy") ? "npy" : "json";
  if (format != "json" && format != "npy") {
    return flags.UsageError(
        absl::StrCat("--format=", format, ": expected json or npy"));
  }
  if (format == "npy" && output.empty()) {
    return flags.UsageError("--format=npy needs --output FILE.npy");
  }

  std::vector<std::string> label_names;
  if (label_names_flag == "fashion-mnist") {
    label_names.assign(kFashionMnistClassNames.begin(),
                       kFashionMnistClassNames.end());
  } else if (!label_names_flag.empty()) {
    std::ifstream names(label_names_flag);
    if (!names) {
      return flags.UsageError(
          absl::StrCat("--label_names=", label_names_flag, ": cannot open"));
    }
    for (std::string line; std::getline(names, line);) {
      label_names.push_back(line);
    }
  }

  std::string failed_flag;
  absl::StatusOr<MineInputs> inputs = ReadInputs(
      queries_path, positives_path, labels_path, query_ids_path, &failed_flag);
  if (!inputs.ok()) return RuntimeError(kCommand, failed_flag, inputs.status());

  absl::StatusOr<std::unique_ptr<Client>> client =
      ConnectToServer(server_flags);
  if (!client.ok()) {
    return RuntimeError(kCommand, server_flags.server, client.status());
  }

  const size_t n = inputs->size();
  MineRun run{batch_size, max_in_flight, options};
  MinedQueries mined;
  mined.results.resize(n);
  mined.versions.resize(n);
  std::vector<absl::Duration> latencies;
  const absl::Time start = absl::Now();
  const absl::Status status =
      stream ? MineStreaming(**client, *inputs, run, &mined, &latencies)
             : MineUnary(**client, *inputs, run, &mined, &latencies);
  const absl::Duration elapsed = absl::Now() - start;
  if (!status.ok()) {
    return RuntimeError(
        kCommand,
        absl::StrCat(stream ? "Mine" : "MineOnce", " on ", server_flags.server),
        status);
  }

  if (format == "npy") {
    const absl::Status written = WriteMineNpy(
        mined, options.num_negatives, options.return_embeddings, output);
    if (!written.ok()) return RuntimeError(kCommand, "--output", written);
  } else if (show == 0 || !output.empty()) {
    std::FILE* out = output.empty() ? stdout : std::fopen(output.c_str(), "w");
    if (out == nullptr) {
      return RuntimeError(
          kCommand, "--output",
          absl::ErrnoToStatus(errno, absl::StrCat(output, ": cannot create")));
    }
    absl::Status written = WriteMineJson(mined, out);
    if (out != stdout && std::fclose(out) != 0 && written.ok()) {
      written = absl::ErrnoToStatus(errno, "closing the file failed");
    }
    if (!written.ok()) {
      return RuntimeError(kCommand, output.empty() ? "stdout" : output,
                          written);
    }
  }

  if (show > 0) {
    WriteMineTable(mined, inputs->labels.value_or(std::vector<int64_t>{}),
                   label_names, show, stdout);
    std::fflush(stdout);
  }

  uint64_t negatives = 0;
  uint64_t shortfall = 0;
  for (const QueryResult& result : mined.results) {
    negatives += result.negatives.size();
    shortfall += result.shortfall;
  }
  const double seconds = std::max(absl::ToDoubleSeconds(elapsed), 1e-9);
  const IndexVersion& version = mined.versions.back();
  const IndexVersion& first = mined.versions.front();
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
      n, latencies.size(), batch_size,
      stream ? "one Mine stream" : "MineOnce calls", seconds,
      static_cast<double>(n) / seconds,
      static_cast<double>(negatives) / seconds,
      absl::ToDoubleMilliseconds(Percentile(latencies, 0.5)),
      absl::ToDoubleMilliseconds(Percentile(latencies, 0.99)), negatives,
      shortfall, version.name, version.sequence);
  if (output.empty()) return kExitOk;
  if (format == "npy") {
    const MineNpyPaths paths = MineNpyPathsFor(output);
    std::cerr << "hardneg mine: wrote " << paths.ids << " and " << paths.scores
              << (options.return_embeddings ? " and " + paths.embeddings : "")
              << "\n";
  } else {
    std::cerr << "hardneg mine: wrote " << output << "\n";
  }
  return kExitOk;
}

}  // namespace hardneg::client
