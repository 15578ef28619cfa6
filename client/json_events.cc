#include "client/json_events.h"

#include <ctime>

namespace natter {
namespace {

const char* KindName(uint8_t kind) {
  switch (static_cast<EventKind>(kind)) {
    case EventKind::kMessage: return "message";
    case EventKind::kReaction: return "reaction";
    case EventKind::kDelivered: return "delivered";
    case EventKind::kSeen: return "seen";
  }
  return "unknown";
}

}  // namespace

std::string FormatTime(uint64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%03uZ", static_cast<unsigned>(unix_ms % 1000));
  return buf;
}

nlohmann::json ErrorJson(const Status& status) {
  return {{"type", "error"},
          {"code", ErrorCodeName(status.code())},
          {"message", status.message()}};
}

nlohmann::json ToJson(const Incoming& in) {
  switch (in.kind) {
    case Incoming::Kind::kProcessed: {
      const Processed& p = in.processed;
      return {{"type", "processed"},
              {"id", std::to_string(p.id.value)},
              {"client_msg_id", p.client_msg_id},
              {"to", p.to.value},
              {"ts", p.ts},
              {"seq", p.seq.value}};
    }
    case Incoming::Kind::kError: {
      nlohmann::json j = ErrorJson(in.error);
      if (!in.client_msg_id.empty()) j["client_msg_id"] = in.client_msg_id;
      return j;
    }
    case Incoming::Kind::kEvent:
      break;
  }
  const Event& e = in.event;
  nlohmann::json j = {{"type", KindName(e.kind)},
                      {"id", std::to_string(e.id.value)},
                      {"seq", e.seq.value},
                      {"missed", in.missed}};
  if (static_cast<EventKind>(e.kind) == EventKind::kMessage) {
    j["from"] = e.from.value;
    j["to"] = e.to.value;
    j["text"] = e.text;
    j["ts"] = e.ts;
    j["client_msg_id"] = e.client_msg_id;
  }
  return j;
}

std::string ToText(const Incoming& in) {
  switch (in.kind) {
    case Incoming::Kind::kProcessed:
      return std::to_string(in.processed.id.value);
    case Incoming::Kind::kError:
      return std::string("error: ") + in.error.message();
    case Incoming::Kind::kEvent:
      break;
  }
  const Event& e = in.event;
  std::string line = FormatTime(e.ts) + " " + std::to_string(e.from.value) +
                     " -> " + std::to_string(e.to.value);
  if (in.missed) line += " (missed)";
  return line + ": " + e.text;
}

}  // namespace natter
