#include "common/shard.h"

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

}  // namespace natter
