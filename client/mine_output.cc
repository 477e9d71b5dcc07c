#include "client/mine_output.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli_json.h"
#include "format/npy.h"

namespace hardneg::client {
namespace {

nlohmann::ordered_json VersionJson(const ServedVersion& version) {
  return {{"name", version.name}, {"sequence", version.sequence}};
}

bool SameVersion(const ServedVersion& a, const ServedVersion& b) {
  return a.name == b.name && a.sequence == b.sequence;
}

// Writes `text` to `out` and clears it.
absl::Status Flush(std::string* text, std::FILE* out) {
  const bool written =
      std::fwrite(text->data(), 1, text->size(), out) == text->size();
  text->clear();
  if (!written) return absl::UnavailableError("writing the output failed");
  return absl::OkStatus();
}

}  // namespace

nlohmann::ordered_json NegativeJson(const Negative& negative) {
  nlohmann::ordered_json json = {{"id", negative.id},
                                 {"score", negative.score},
                                 {"label", negative.label},
                                 {"rank", negative.rank}};
  if (!negative.embedding.empty()) json["embedding"] = negative.embedding;
  return json;
}

nlohmann::ordered_json QueryResultJson(const QueryResult& result,
                                       size_t query) {
  nlohmann::ordered_json negatives = nlohmann::ordered_json::array();
  for (const Negative& negative : result.negatives) {
    negatives.push_back(NegativeJson(negative));
  }
  nlohmann::ordered_json json = {{"query", query},
                                 {"negatives", std::move(negatives)},
                                 {"shortfall", result.shortfall},
                                 {"positive_score", nullptr}};
  if (result.positive_score) json["positive_score"] = *result.positive_score;
  return json;
}

absl::Status WriteMineJson(const MinedQueries& mined, std::FILE* out) {
  bool version_changed = false;
  for (const ServedVersion& version : mined.versions) {
    if (!SameVersion(version, mined.versions.front())) version_changed = true;
  }
  std::string text = "{\"index\": ";
  AppendJson(VersionJson(mined.versions.empty() ? ServedVersion()
                                                : mined.versions.back()),
             JsonFloats::kShortestFloat, &text);
  if (!mined.missing_shards.empty()) {
    text += ", \"missing_shards\": ";
    AppendJson(nlohmann::ordered_json(mined.missing_shards),
               JsonFloats::kShortestFloat, &text);
  }
  absl::StrAppend(&text, ", \"num_queries\": ", mined.results.size(),
                  ", \"results\": [\n");
  for (size_t i = 0; i < mined.results.size(); ++i) {
    nlohmann::ordered_json result = QueryResultJson(mined.results[i], i);
    if (version_changed) result["index"] = VersionJson(mined.versions[i]);
    AppendJson(result, JsonFloats::kShortestFloat, &text);
    absl::StrAppend(&text, i + 1 < mined.results.size() ? "," : "", "\n");
    // Flush in pieces so a large output never sits in memory whole.
    if (text.size() > (1 << 20)) {
      if (absl::Status status = Flush(&text, out); !status.ok()) return status;
    }
  }
  text.append("]}\n");
  if (absl::Status status = Flush(&text, out); !status.ok()) return status;
  if (std::fflush(out) != 0) {
    return absl::UnavailableError("writing the JSON output failed");
  }
  return absl::OkStatus();
}

absl::Status WriteMineCsv(const MinedQueries& mined, std::FILE* out) {
  std::string text =
      "query,position,id,score,label,rank,shortfall,positive_score,index,"
      "sequence\n";
  for (size_t i = 0; i < mined.results.size(); ++i) {
    const QueryResult& result = mined.results[i];
    const ServedVersion version =
        i < mined.versions.size() ? mined.versions[i] : ServedVersion();
    // Version names are [A-Za-z0-9._-]: never quoted.
    const std::string tail = absl::StrCat(
        result.shortfall, ",",
        result.positive_score ? absl::StrFormat("%.9g", *result.positive_score)
                              : "",
        ",", version.name, ",", version.sequence, "\n");
    if (result.negatives.empty()) {
      absl::StrAppend(&text, i, ",,,,,,", tail);
    }
    for (size_t j = 0; j < result.negatives.size(); ++j) {
      const Negative& negative = result.negatives[j];
      if (!negative.embedding.empty()) {
        return absl::InvalidArgumentError(
            "CSV holds no embeddings: write --return_embeddings to .npy or "
            ".json");
      }
      absl::StrAppend(&text, i, ",", j, ",", negative.id, ",",
                      absl::StrFormat("%.9g", negative.score), ",",
                      negative.label, ",", negative.rank, ",", tail);
    }
    if (text.size() > (1 << 20)) {
      if (absl::Status status = Flush(&text, out); !status.ok()) return status;
    }
  }
  if (absl::Status status = Flush(&text, out); !status.ok()) return status;
  if (std::fflush(out) != 0) {
    return absl::UnavailableError("writing the CSV output failed");
  }
  return absl::OkStatus();
}

MineNpyPaths MineNpyPathsFor(const std::string& path) {
  std::string base = path;
  if (absl::EndsWith(base, ".npy")) base.resize(base.size() - 4);
  return {path, absl::StrCat(base, ".scores.npy"),
          absl::StrCat(base, ".embeddings.npy")};
}

absl::Status WriteMineNpy(const MinedQueries& mined, uint32_t num_negatives,
                          bool embeddings, const std::string& path) {
  const MineNpyPaths paths = MineNpyPathsFor(path);
  const size_t n = mined.results.size();
  const size_t k = num_negatives;
  std::vector<int64_t> ids(n * k, -1);
  std::vector<float> scores(n * k, std::numeric_limits<float>::quiet_NaN());
  size_t dim = 0;
  for (size_t i = 0; i < n; ++i) {
    const std::vector<Negative>& negatives = mined.results[i].negatives;
    if (negatives.size() > k) {
      return absl::InvalidArgumentError(
          absl::StrCat("query ", i, " got ", negatives.size(),
                       " negatives, more than the ", k, " asked for"));
    }
    for (size_t j = 0; j < negatives.size(); ++j) {
      ids[i * k + j] = negatives[j].id;
      scores[i * k + j] = negatives[j].score;
      if (embeddings && dim == 0) dim = negatives[j].embedding.size();
    }
  }
  absl::Status status = WriteNpyArray(paths.ids, "<i8", {n, k}, ids.data());
  if (!status.ok()) return status;
  status = WriteNpyArray(paths.scores, "<f4", {n, k}, scores.data());
  if (!status.ok() || !embeddings) return status;

  std::vector<float> vectors(n * k * dim, 0.0f);
  for (size_t i = 0; i < n; ++i) {
    const std::vector<Negative>& negatives = mined.results[i].negatives;
    for (size_t j = 0; j < negatives.size(); ++j) {
      const std::vector<float>& embedding = negatives[j].embedding;
      if (embedding.size() != dim) {
        return absl::InvalidArgumentError(
            absl::StrCat("query ", i, " negative ", j, " came with a ",
                         embedding.size(), "-float embedding, expected ", dim));
      }
      std::copy(
          embedding.begin(), embedding.end(),
          vectors.begin() + static_cast<std::ptrdiff_t>((i * k + j) * dim));
    }
  }
  return WriteNpyArray(paths.embeddings, "<f4", {n, k, dim}, vectors.data());
}

void WriteMineTable(const MinedQueries& mined,
                    const std::vector<int64_t>& query_labels,
                    const std::vector<std::string>& label_names, size_t show,
                    std::FILE* out) {
  auto name = [&](int64_t label) {
    if (label >= 0 && static_cast<size_t>(label) < label_names.size()) {
      return absl::StrFormat("%s (%d)", label_names[label], label);
    }
    return absl::StrCat(label);
  };
  const size_t n = std::min(show, mined.results.size());
  for (size_t i = 0; i < n; ++i) {
    const QueryResult& result = mined.results[i];
    std::string header = absl::StrCat("query ", i);
    if (i < query_labels.size()) {
      absl::StrAppend(&header, ": ", name(query_labels[i]),
                      ", its class excluded");
    }
    if (result.positive_score.has_value()) {
      absl::StrAppend(&header,
                      absl::StrFormat(", p = %.4f", *result.positive_score));
    }
    std::fprintf(out, "%s:\n", header.c_str());
    std::fprintf(out, "  %5s  %10s  %-24s  %10s\n", "rank", "id", "label",
                 "score");
    for (const Negative& negative : result.negatives) {
      std::fprintf(out, "  %5u  %10lld  %-24s  %10.4f\n", negative.rank,
                   static_cast<long long>(negative.id),
                   name(negative.label).c_str(), negative.score);
    }
    if (result.shortfall > 0) {
      std::fprintf(out, "  (shortfall %u)\n", result.shortfall);
    }
  }
}

}  // namespace hardneg::client
