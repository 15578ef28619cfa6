// Small text helpers: UTF-8 validation, durations, hex.
#ifndef NATTER_COMMON_TEXT_H_
#define NATTER_COMMON_TEXT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace natter {

// Well-formed UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF).
bool IsValidUtf8(std::string_view s);

// "90s", "15m", "24h", "7d" (or a bare number of seconds) to seconds.
std::optional<uint64_t> ParseDuration(std::string_view s);

// RFC 3339 (2026-11-27T18:00:00Z, 2026-11-27T19:00:00.5+01:00) or
// milliseconds since the epoch, to Unix milliseconds.
std::optional<uint64_t> ParseTime(const std::string& text);

// A whole decimal number, nothing else.
std::optional<uint64_t> ParseUint(std::string_view s);

std::string ToHex(const uint8_t* data, size_t size);

// Splits on white space (and commas), dropping empty pieces.
std::vector<std::string> SplitList(std::string_view s);

}  // namespace natter

#endif  // NATTER_COMMON_TEXT_H_
