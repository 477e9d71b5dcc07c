// Built against an installed hardneg (tests/install/check_install.sh):
// publishes a tiny corpus to the hardneg-server at argv[1], then reads it
// back with GetIndexInfo and MineOnce. Exits 0 when every answer is right.
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "hardneg/client.h"

namespace {

int Fail(const std::string& what) {
  std::cerr << "consumer: " << what << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return Fail("usage: consumer HOST:PORT");
  hardneg::client::ClientOptions options;
  options.connect_timeout = absl::Seconds(10);
  options.rpc_timeout = absl::Seconds(30);
  options.publish_timeout = absl::Seconds(60);
  auto client = hardneg::Client::Connect(argv[1], options);
  if (!client.ok()) return Fail(client.status().ToString());

  // 8 candidates of dim 4: id 100 + i is axis i % 4, of length 1 + i / 4.
  constexpr uint32_t kDim = 4;
  std::vector<int64_t> ids;
  std::vector<float> embeddings;
  for (int64_t i = 0; i < 8; ++i) {
    ids.push_back(100 + i);
    for (uint32_t d = 0; d < kDim; ++d) {
      embeddings.push_back(d == i % kDim ? 1.0f + static_cast<float>(i / 4)
                                         : 0.0f);
    }
  }
  hardneg::client::PublishSpec spec;
  spec.name = "consumer-v1";
  spec.step = 1;
  spec.dim = kDim;
  spec.metric = "inner_product";
  spec.ids = ids;
  spec.embeddings = embeddings;
  auto served = (*client)->Publish(spec);
  if (!served.ok()) return Fail("Publish: " + served.status().ToString());
  if (served->name != "consumer-v1") {
    return Fail("Publish served " + served->name);
  }

  auto info = (*client)->GetIndexInfo();
  if (!info.ok()) return Fail("GetIndexInfo: " + info.status().ToString());
  if (info->version.name != "consumer-v1" || info->size != 8 ||
      info->dim != kDim) {
    return Fail("GetIndexInfo: " + info->version.name + ", size " +
                std::to_string(info->size) + ", dim " +
                std::to_string(info->dim));
  }

  // Along axis 0: 104 scores 2 (the positive, excluded), 100 scores 1, the
  // rest 0. The best negative is 100.
  hardneg::client::Query query;
  query.embedding = {1, 0, 0, 0};
  query.positive_ids = {104};
  hardneg::client::MiningOptions mining;
  mining.num_negatives = 3;
  auto reply = (*client)->MineOnce({query}, mining, /*request_id=*/7);
  if (!reply.ok()) return Fail("MineOnce: " + reply.status().ToString());
  if (reply->request_id != 7 || reply->results.size() != 1) {
    return Fail("MineOnce: wrong request_id or result count");
  }
  const auto& result = reply->results[0];
  if (result.negatives.size() != 3 || result.negatives[0].id != 100 ||
      result.negatives[0].score != 1.0f || !result.positive_score ||
      *result.positive_score != 2.0f) {
    return Fail("MineOnce: unexpected negatives");
  }
  std::cout << "consumer: " << info->version.name << " (sequence "
            << info->version.sequence << "), " << info->size
            << " candidates; best negative " << result.negatives[0].id << "\n";
  return 0;
}
