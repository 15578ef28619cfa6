// How natter(1) shows what arrives: one JSON object a line (--json), or a
// line of text for people.  Message ids are strings in JSON (they exceed
// 2^53); user ids and ts are numbers.  JSON holds texts exactly; a line of
// text shows them through Printable, so each is one line that cannot
// steer the terminal.
#ifndef NATTER_CLIENT_JSON_EVENTS_H_
#define NATTER_CLIENT_JSON_EVENTS_H_

#include <nlohmann/json.hpp>
#include <string>

#include "client/client.h"

namespace natter {

nlohmann::json ToJson(const Incoming& in);
// A trace id as natterctl trace and the daemons' logs show it: 16 hex digits.
std::string TraceHex(uint64_t trace);
// A history page's message: a `message` object with reactions (user id ->
// emoji), delivered and seen.
nlohmann::json ToJson(const HistoryItem& item);
nlohmann::json ToJson(const ChatItem& chat);
std::string ToText(const HistoryItem& item, UserId viewer);
std::string ToText(const ChatItem& chat, UserId viewer);
nlohmann::json ErrorJson(const Status& status);
std::string ToText(const Incoming& in);

// RFC 3339 in UTC with milliseconds: 2026-11-27T18:00:00.123Z
std::string FormatTime(uint64_t unix_ms);

}  // namespace natter

#endif  // NATTER_CLIENT_JSON_EVENTS_H_
