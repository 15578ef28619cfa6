#include "common/text.h"

#include <sodium.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <system_error>

namespace natter {

bool NextCodePoint(std::string_view s, size_t* i, char32_t* out) {
  unsigned char c = s[*i];
  size_t len = c < 0x80             ? 1
               : (c & 0xE0) == 0xC0 ? 2
               : (c & 0xF0) == 0xE0 ? 3
               : (c & 0xF8) == 0xF0 ? 4
                                    : 0;
  char32_t cp = len == 1   ? c
                : len == 2 ? c & 0x1F
                : len == 3 ? c & 0x0F
                           : c & 0x07;
  bool ok = len != 0 && *i + len <= s.size();
  for (size_t k = 1; ok && k < len; ++k) {
    unsigned char cc = s[*i + k];
    ok = (cc & 0xC0) == 0x80;
    cp = (cp << 6) | (cc & 0x3F);
  }
  // No overlong forms, no surrogates, nothing past U+10FFFF.
  ok = ok && !((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
               (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
               (cp >= 0xD800 && cp <= 0xDFFF));
  if (ok) *out = cp;
  *i += ok ? len : 1;
  return ok;
}

bool IsValidUtf8(std::string_view s) {
  char32_t c;
  for (size_t i = 0; i < s.size();) {
    if (!NextCodePoint(s, &i, &c)) return false;
  }
  return true;
}

bool IsControlChar(char32_t c) {
  return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x2028 || c == 0x2029 ||
         c == 0x061C || c == 0x200E || c == 0x200F ||
         (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);
}

std::string Printable(std::string_view text, std::string_view also) {
  std::string out;
  out.reserve(text.size());
  char escape[12];
  for (size_t i = 0; i < text.size();) {
    size_t start = i;
    char32_t c;
    if (!NextCodePoint(text, &i, &c)) {
      std::snprintf(escape, sizeof escape, "\\x%02x",
                    static_cast<unsigned char>(text[start]));
      out += escape;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (IsControlChar(c)) {
      std::snprintf(escape, sizeof escape, c <= 0x7F ? "\\x%02x" : "\\u%04x",
                    static_cast<unsigned>(c));
      out += escape;
    } else if (c < 0x80 &&
               also.find(static_cast<char>(c)) != std::string_view::npos) {
      out += '\\';
      out += static_cast<char>(c);
    } else {
      out.append(text.substr(start, i - start));
    }
  }
  return out;
}

bool IsPlainWord(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                 (c >= '0' && c <= '9') ||
                 std::string_view("._:/@+-").find(c) != std::string_view::npos;
    if (!plain) return false;
  }
  return true;
}

std::optional<uint64_t> ParseUint(std::string_view s) {
  // from_chars takes no sign and no white space for an unsigned type, and
  // says when the number is past its range.
  uint64_t v = 0;
  const char* end = s.data() + s.size();
  auto [stop, error] = std::from_chars(s.data(), end, v);
  if (error != std::errc() || stop != end) return std::nullopt;
  return v;
}

std::optional<uint64_t> ParseDuration(std::string_view s) {
  if (s.empty()) return std::nullopt;
  static constexpr std::string_view kUnits = "smhd";
  static constexpr uint64_t kUnitSeconds[] = {1, 60, 3600, 86400};
  size_t u = kUnits.find(s.back());
  uint64_t unit = u == std::string_view::npos ? 1 : kUnitSeconds[u];
  auto n =
      ParseUint(u == std::string_view::npos ? s : s.substr(0, s.size() - 1));
  if (!n || *n > kMaxDurationSeconds / unit) return std::nullopt;
  return *n * unit;
}

std::string ToHex(const uint8_t* data, size_t size) {
  std::string out(2 * size + 1, '\0');  // and sodium_bin2hex's NUL
  sodium_bin2hex(out.data(), out.size(), data, size);
  out.pop_back();
  return out;
}

bool FromHex(std::string_view hex, uint8_t* out, size_t size) {
  size_t len = 0;
  const char* end = nullptr;
  return hex.size() == 2 * size &&
         sodium_hex2bin(out, size, hex.data(), hex.size(), nullptr, &len,
                        &end) == 0 &&
         len == size && end == hex.data() + hex.size();
}

namespace {

// Splits at any of `separators`, dropping empty pieces.
std::vector<std::string> SplitAt(std::string_view s,
                                 std::string_view separators) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (separators.find(c) != std::string_view::npos) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

}  // namespace

std::vector<std::string> SplitList(std::string_view s) {
  return SplitAt(s, " \t,\n");
}

std::vector<std::string> SplitWords(std::string_view s) {
  return SplitAt(s, " \t\n");
}

std::optional<uint64_t> ParseTime(const std::string& text) {
  if (auto ms = ParseUint(text)) return ms;
  // RFC 3339: YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM), each field
  // its digits exactly.
  const std::string_view s = text;
  auto digits = [&](size_t at, size_t n) {
    return at + n <= s.size() ? ParseUint(s.substr(at, n)) : std::nullopt;
  };
  auto is = [&](size_t at, std::string_view chars) {
    return at < s.size() && chars.find(s[at]) != std::string_view::npos;
  };
  const auto y = digits(0, 4), mo = digits(5, 2), d = digits(8, 2),
             h = digits(11, 2), mi = digits(14, 2), sec = digits(17, 2);
  if (!y || !mo || !d || !h || !mi || !sec || !is(4, "-") || !is(7, "-") ||
      !is(10, "Tt ") || !is(13, ":") || !is(16, ":")) {
    return std::nullopt;
  }
  size_t i = 19;
  uint64_t fraction_ms = 0;  // rounded to the nearest millisecond
  if (is(i, ".")) {
    const size_t start = ++i;
    while (is(i, "0123456789")) ++i;
    if (i == start) return std::nullopt;
    std::string tenths_of_ms(s.substr(start, std::min<size_t>(4, i - start)));
    tenths_of_ms.resize(4, '0');
    fraction_ms = (*ParseUint(tenths_of_ms) + 5) / 10;
  }
  long offset_s = 0;
  if (s.substr(i) == "Z" || s.substr(i) == "z") {
    offset_s = 0;
  } else if (s.size() == i + 6 && is(i, "+-") && is(i + 3, ":")) {
    auto zh = digits(i + 1, 2), zm = digits(i + 4, 2);
    if (!zh || !zm || *zh > 23 || *zm > 59) return std::nullopt;
    offset_s =
        static_cast<long>(*zh * 3600 + *zm * 60) * (s[i] == '-' ? -1 : 1);
  } else {
    return std::nullopt;
  }
  if (*mo < 1 || *mo > 12 || *d < 1 || *d > 31 || *h > 23 || *mi > 59 ||
      *sec > 60) {
    return std::nullopt;
  }
  struct tm tm = {};
  tm.tm_year = static_cast<int>(*y) - 1900;
  tm.tm_mon = static_cast<int>(*mo) - 1;
  tm.tm_mday = static_cast<int>(*d);
  tm.tm_hour = static_cast<int>(*h);
  tm.tm_min = static_cast<int>(*mi);
  tm.tm_sec = static_cast<int>(*sec);
  time_t t = timegm(&tm);
  if (t < 0) return std::nullopt;
  long long ms = (static_cast<long long>(t) - offset_s) * 1000 +
                 static_cast<long long>(fraction_ms);
  if (ms < 0) return std::nullopt;
  return static_cast<uint64_t>(ms);
}

}  // namespace natter
