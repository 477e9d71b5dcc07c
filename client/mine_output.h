// Writing what `hardneg mine` mined: JSON (one object per query), CSV (one
// row per negative) or .npy arrays padded to num_negatives columns.
//
// Stateless functions; safe to call from any thread.
#ifndef HARDNEG_CLIENT_MINE_OUTPUT_H_
#define HARDNEG_CLIENT_MINE_OUTPUT_H_

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/client.h"
#include "nlohmann/json.hpp"

namespace hardneg::client {

// The answers for every query of an input file, in query order.
struct MinedQueries {
  std::vector<QueryResult> results;
  // The index version that answered each query (a swap can happen between
  // two batches).
  std::vector<ServedVersion> versions;
  // The shards any answer lacked (through a router, with --allow_partial),
  // each once, in the order first seen.
  std::vector<std::string> missing_shards;
};

// Writes one JSON document:
//   {"index": {"name", "sequence"}, "num_queries": n, "results": [
//    {"query": i, "negatives": [{"id", "score", "label", "rank"
//      [, "embedding"]}], "shortfall": s, "positive_score": p or null}, ...]}
// one result per line; "missing_shards": [...] follows "index" when an
// answer lacked shards. When the version changed during the run, "index" is
// the last one and each result carries its own "index" too. Non-finite
// floats are written as null.
absl::Status WriteMineJson(const MinedQueries& mined, std::FILE* out);

// Writes CSV with a header line:
//   query,position,id,score,label,rank,shortfall,positive_score,index,sequence
// one row per negative (position: its column, 0-based), or one row with
// position, id, score, label and rank empty for a query that got none;
// shortfall and positive_score (empty without positives) repeat the
// query's, index and sequence name the version that answered it. Scores
// are written with 9 significant digits (a float32 round-trips).
// INVALID_ARGUMENT when a negative carries an embedding (CSV holds none).
absl::Status WriteMineCsv(const MinedQueries& mined, std::FILE* out);

// One negative of WriteMineJson: {"id", "score", "label", "rank"
// [, "embedding"]}; scores and embedding values are floats.
nlohmann::ordered_json NegativeJson(const Negative& negative);

// The result of query number `query`: {"query", "negatives", "shortfall",
// "positive_score"}, positive_score null when there was no positive.
nlohmann::ordered_json QueryResultJson(const QueryResult& result, size_t query);

// Writes a human-readable table of the first `show` queries' negatives:
// rank, id, label (named by `label_names` when it covers the label) and
// score. `query_labels`, when non-empty, gives each query's own label.
void WriteMineTable(const MinedQueries& mined,
                    const std::vector<int64_t>& query_labels,
                    const std::vector<std::string>& label_names, size_t show,
                    std::FILE* out);

// The file names WriteMineNpy writes, from `path`: the ids go to `path`
// itself, the rest next to it with ".npy" replaced by ".scores.npy" and
// ".embeddings.npy".
struct MineNpyPaths {
  std::string ids;
  std::string scores;
  std::string embeddings;
};
MineNpyPaths MineNpyPathsFor(const std::string& path);

// Writes ids int64 [n, num_negatives] padded with -1, scores float32
// [n, num_negatives] padded with NaN, and with `embeddings` also float32
// [n, num_negatives, dim] padded with zeros. INVALID_ARGUMENT when the
// returned embeddings do not all have one dimension; file errors name the
// file.
absl::Status WriteMineNpy(const MinedQueries& mined, uint32_t num_negatives,
                          bool embeddings, const std::string& path);

}  // namespace hardneg::client

#endif  // HARDNEG_CLIENT_MINE_OUTPUT_H_
