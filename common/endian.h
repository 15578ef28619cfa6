// Big-endian fixed-width integers: LevelDB keys (byte order is numeric
// order), PUB/SUB topics and the ZMTP wire.
#ifndef NATTER_COMMON_ENDIAN_H_
#define NATTER_COMMON_ENDIAN_H_

#include <cstdint>
#include <string>

namespace natter {

// Appends the low `bytes` bytes of v, most significant first.
inline void PutBigEndian(std::string* out, uint64_t v, int bytes = 8) {
  for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((v >> shift) & 0xff));
  }
}

// Reads `bytes` bytes at p, most significant first.
inline uint64_t GetBigEndian(const char* p, int bytes = 8) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace natter

#endif  // NATTER_COMMON_ENDIAN_H_
