// Small text helpers: UTF-8, text made safe to show, durations, hex.
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

// Decodes the character at s[*i] and moves *i past it; false, moving *i
// one byte, when the bytes there are not well-formed UTF-8.
bool NextCodePoint(std::string_view s, size_t* i, char32_t* out);

// A character that steers the terminal or the text rather than shows:
// C0 (LF, CR, TAB and ESC among them), DEL, C1, the line and paragraph
// separators U+2028 and U+2029, and the bidirectional controls U+061C,
// U+200E, U+200F, U+202A to U+202E and U+2066 to U+2069.
bool IsControlChar(char32_t c);

// Text that someone else controls, made inert for one line of a terminal
// or a log: each IsControlChar character becomes a visible escape -- \n,
// \r and \t for those three, \xHH for the rest of C0 and DEL, \uHHHH
// for the others -- and so does each byte that is not UTF-8 (\xHH).  The
// rest stands for itself, a backslash too, so Printable of its own output
// changes nothing; only the ASCII characters in `also` get a backslash
// before them (a quoted log value escapes `"` and `\`).  natter(1) OUTPUT
// documents the form.
std::string Printable(std::string_view text, std::string_view also = {});

// Non-empty and only [A-Za-z0-9._:/@+-]: a word that needs no quoting in
// a key=value log line and no escaping anywhere.
bool IsPlainWord(std::string_view s);

// Durations: at most 100 years, so any std::chrono duration (nanoseconds
// hold 292 years) takes one, added to now, without overflow.
constexpr uint64_t kMaxDurationSeconds = 100ULL * 365 * 86400;

// "90s", "15m", "24h", "7d" (or a bare number of seconds) to seconds;
// nullopt past kMaxDurationSeconds.
std::optional<uint64_t> ParseDuration(std::string_view s);

// RFC 3339 (2026-11-27T18:00:00Z, 2026-11-27T19:00:00.5+01:00) or
// milliseconds since the epoch, to Unix milliseconds.
std::optional<uint64_t> ParseTime(const std::string& text);

// A whole decimal number that fits 64 bits, nothing else: no sign, no
// spaces.  Every reader of a decimal number (config, flags, natterctl,
// natter rpc, pid files) uses it.
std::optional<uint64_t> ParseUint(std::string_view s);

// Lower-case hex, two digits a byte.
std::string ToHex(const uint8_t* data, size_t size);
// Exactly size bytes from 2 * size hex digits (either case), nothing else.
bool FromHex(std::string_view hex, uint8_t* out, size_t size);

// Splits on white space (and commas), dropping empty pieces.
std::vector<std::string> SplitList(std::string_view s);
// Splits on white space only (the shard map: a shard's replicas are joined
// by commas).
std::vector<std::string> SplitWords(std::string_view s);

}  // namespace natter

#endif  // NATTER_COMMON_TEXT_H_
