#include "daemons/stored/record_cache.h"

namespace natter {
namespace stored {

bool RecordCache::Keeps(const std::string& key) {
  return !key.empty() && (key[0] == 'c' || key[0] == 'k' || key[0] == 'a');
}

bool RecordCache::Get(const std::string& key, std::string* value) {
  auto young = young_.find(key);
  if (young != young_.end()) {
    *value = young->second;
    ++hits_;
    return true;
  }
  auto old = old_.find(key);
  if (old == old_.end()) {
    ++misses_;
    return false;
  }
  ++hits_;
  *value = old->second;
  std::string moved = std::move(old->second);
  old_bytes_ -= Cost(key, moved);
  old_.erase(old);
  Put(key, moved);
  return true;
}

void RecordCache::Put(const std::string& key, const std::string& value) {
  if (Cost(key, value) > max_bytes_ / 2) {
    // Would not fit a half: not kept, and no older value either.
    auto y = young_.find(key);
    if (y != young_.end()) {
      young_bytes_ -= Cost(key, y->second);
      young_.erase(y);
    }
    auto o = old_.find(key);
    if (o != old_.end()) {
      old_bytes_ -= Cost(key, o->second);
      old_.erase(o);
    }
    return;
  }
  auto [it, fresh] = young_.try_emplace(key, value);
  if (!fresh) {
    young_bytes_ -= Cost(key, it->second);
    it->second = value;
  } else {
    // An older value in the old generation would be found after this one
    // leaves the young: drop it now.
    auto stale = old_.find(key);
    if (stale != old_.end()) {
      old_bytes_ -= Cost(key, stale->second);
      old_.erase(stale);
    }
  }
  young_bytes_ += Cost(key, value);
  if (young_bytes_ > max_bytes_ / 2) {
    old_.swap(young_);
    old_bytes_ = young_bytes_;
    young_.clear();
    young_bytes_ = 0;
  }
}

void RecordCache::Clear() {
  young_.clear();
  old_.clear();
  young_bytes_ = old_bytes_ = 0;
}

}  // namespace stored
}  // namespace natter
