#include "common/shard.h"

#include <algorithm>

#include "common/curve.h"

namespace natter {

uint32_t HomeShard(UserId user, uint32_t shard_count) {
  if (shard_count <= 1) return 0;
  // splitmix64 first, so that consecutive ids spread over the shards.
  uint64_t key = user.value + 0x9e3779b97f4a7c15ULL;
  key = (key ^ (key >> 30)) * 0xbf58476d1ce4e5b9ULL;
  key = (key ^ (key >> 27)) * 0x94d049bb133111ebULL;
  key ^= key >> 31;
  int64_t b = -1, j = 0;
  while (j < static_cast<int64_t>(shard_count)) {
    b = j;
    key = key * 2862933555777941757ULL + 1;
    j = static_cast<int64_t>((b + 1) * (static_cast<double>(1LL << 31) /
                                        static_cast<double>((key >> 33) + 1)));
  }
  return static_cast<uint32_t>(b);
}

std::vector<std::string> ReplicaEndpoints(const std::string& shard_entry) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= shard_entry.size()) {
    size_t comma = shard_entry.find(',', at);
    if (comma == std::string::npos) comma = shard_entry.size();
    std::string endpoint = shard_entry.substr(at, comma - at);
    out.push_back(endpoint == "-" ? "" : endpoint);
    at = comma + 1;
  }
  return out;
}

Status CheckReplicaChange(uint32_t shard,
                          const std::vector<std::string>& before,
                          const std::vector<std::string>& after) {
  const std::string which = "shard " + std::to_string(shard) + ": ";
  if (after.size() < before.size()) {
    return Status(ErrorCode::kBadRequest,
                  which + std::to_string(after.size()) +
                      " replica places, not " + std::to_string(before.size()) +
                      " (a removed replica's place stays, as -)");
  }
  if (before.size() == 1 && after.size() > 1) {
    return Status(ErrorCode::kBadRequest,
                  which +
                      "a shard of one replica does not gain replicas while it "
                      "runs (its folder is shard-N; see natter-stored(8))");
  }
  for (size_t k = 0; k < after.size(); ++k) {
    if (k < before.size() && after[k] != before[k] && !after[k].empty()) {
      return Status(ErrorCode::kBadRequest,
                    which + "replica " + std::to_string(k) +
                        " has another endpoint (a replica keeps its own: "
                        "remove it and add another)");
    }
    Endpoint parsed;
    Status s = k < before.size() || after[k].empty()
                   ? Status::Ok()
                   : ParseEndpoint(after[k], &parsed);
    if (!s.ok()) {
      return Status(
          ErrorCode::kBadRequest,
          which + "replica " + std::to_string(k) + ": " + s.message());
    }
  }
  if (std::all_of(after.begin(), after.end(),
                  [](const std::string& e) { return e.empty(); })) {
    return Status(ErrorCode::kBadRequest, which + "no replica is left");
  }
  return Status::Ok();
}

}  // namespace natter
