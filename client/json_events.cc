#include "client/json_events.h"

#include <cstdio>
#include <ctime>

#include "common/text.h"

namespace natter {
namespace {

const char* KindName(EventKind kind) {
  switch (kind) {
    case EventKind::kMessage:
      return "message";
    case EventKind::kReaction:
      return "reaction";
    case EventKind::kDelivered:
      return "delivered";
    case EventKind::kSeen:
      return "seen";
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
  snprintf(buf + n, sizeof buf - n, ".%03uZ",
           static_cast<unsigned>(unix_ms % 1000));
  return buf;
}

nlohmann::json ErrorJson(const Status& status) {
  return {{"type", "error"},
          {"code", ErrorCodeName(status.code())},
          {"message", status.message()}};
}

std::string TraceHex(uint64_t trace) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(trace));
  return buf;
}

nlohmann::json ToJson(const Incoming& in) {
  switch (in.kind) {
    case Incoming::Kind::kProcessed: {
      const Processed& p = in.processed;
      nlohmann::json j = {{"type", "processed"},
                          {"id", std::to_string(p.id.value)},
                          {"client_msg_id", p.client_msg_id},
                          {"to", p.to.value},
                          {"ts", p.ts},
                          {"seq", p.seq.value}};
      if (in.trace != 0) j["trace"] = TraceHex(in.trace);
      return j;
    }
    case Incoming::Kind::kError: {
      nlohmann::json j = ErrorJson(in.error);
      if (!in.client_msg_id.empty()) j["client_msg_id"] = in.client_msg_id;
      return j;
    }
    case Incoming::Kind::kOk:
      return {{"type", "ok"}};
    case Incoming::Kind::kLink:
      return {{"type", "link"}, {"online", in.online}};
    case Incoming::Kind::kHistory:
    case Incoming::Kind::kChats:
    case Incoming::Kind::kMailbox:
      return {{"type", "page"}};  // printed item by item, see natter_main
    case Incoming::Kind::kEvent:
      break;
  }
  const Event& e = in.event;
  nlohmann::json j = {{"type", KindName(e.kind())},
                      {"id", std::to_string(e.id().value)},
                      {"seq", e.seq.value},
                      {"missed", in.missed}};
  if (const Message* m = e.message()) {
    j["from"] = m->from.value;
    j["to"] = m->to.value;
    j["text"] = m->text;
    j["ts"] = m->ts;
    j["client_msg_id"] = m->client_msg_id;
  } else if (const ReactionEvent* r = e.reaction()) {
    j["by"] = r->by.value;
    j["emoji"] = r->emoji ? nlohmann::json(*r->emoji) : nlohmann::json(nullptr);
    j["peer"] = e.peer().value;
  } else if (const Receipt* r = e.receipt()) {
    j["by"] = r->by.value;
    j["peer"] = e.peer().value;
  }
  return j;
}

nlohmann::json ToJson(const HistoryItem& item) {
  const Message& m = item.message;
  nlohmann::json reactions = nlohmann::json::object();
  for (const Reaction& r : item.reactions) {
    reactions[std::to_string(r.user.value)] = r.emoji;
  }
  return {{"type", "message"},
          {"id", std::to_string(m.id.value)},
          {"from", m.from.value},
          {"to", m.to.value},
          {"text", m.text},
          {"ts", m.ts},
          {"client_msg_id", m.client_msg_id},
          {"reactions", reactions},
          {"delivered", item.delivered},
          {"seen", item.seen}};
}

nlohmann::json ToJson(const ChatItem& c) {
  auto id_or_null = [](MessageId id) {
    return id.value == 0 ? nlohmann::json(nullptr)
                         : nlohmann::json(std::to_string(id.value));
  };
  return {{"type", "chat"},
          {"peer", c.peer.value},
          {"last",
           {{"id", std::to_string(c.last_id.value)},
            {"ts", c.last_ts},
            {"from", c.last_from.value},
            {"text", c.last_text}}},
          {"unread", c.unread},
          {"delivered", id_or_null(c.delivered)},
          {"seen", id_or_null(c.seen)}};
}

std::string ToText(const HistoryItem& item, UserId viewer) {
  const Message& m = item.message;
  std::string line = std::to_string(m.id.value) + " " + FormatTime(m.ts) + " " +
                     std::to_string(m.from.value) + ": " + Printable(m.text);
  for (const Reaction& r : item.reactions) {
    line +=
        " [" + std::to_string(r.user.value) + " " + Printable(r.emoji) + "]";
  }
  if (m.from == viewer) {
    line += item.seen ? " (seen)" : item.delivered ? " (delivered)" : " (sent)";
  }
  return line;
}

std::string ToText(const ChatItem& c, UserId viewer) {
  std::string line = std::to_string(c.peer.value) + " unread " +
                     std::to_string(c.unread) + " " + FormatTime(c.last_ts) +
                     " " + std::to_string(c.last_from.value) + ": " +
                     Printable(c.last_text);
  if (c.last_from == viewer) {
    line += c.seen >= c.last_id        ? " (seen)"
            : c.delivered >= c.last_id ? " (delivered)"
                                       : " (sent)";
  }
  return line;
}

std::string ToText(const Incoming& in) {
  switch (in.kind) {
    case Incoming::Kind::kProcessed:
      return std::to_string(in.processed.id.value) +
             (in.trace != 0 ? " trace=" + TraceHex(in.trace) : "");
    case Incoming::Kind::kError:
      return "error: " + Printable(in.error.message());
    case Incoming::Kind::kOk:
      return "ok";
    case Incoming::Kind::kLink:
      return in.online ? "connected again" : "connection lost; reconnecting";
    case Incoming::Kind::kHistory:
    case Incoming::Kind::kChats:
    case Incoming::Kind::kMailbox:
      return "";
    case Incoming::Kind::kEvent:
      break;
  }
  const Event& e = in.event;
  std::string missed = in.missed ? " (missed)" : "";
  std::string id = std::to_string(e.id().value);
  if (const Message* m = e.message()) {
    return FormatTime(m->ts) + " " + std::to_string(m->from.value) + " -> " +
           std::to_string(m->to.value) + missed + ": " + Printable(m->text);
  }
  if (const ReactionEvent* r = e.reaction()) {
    return std::to_string(r->by.value) +
           (r->emoji ? " reacted " + Printable(*r->emoji) + " to "
                     : " removed the reaction to ") +
           id + missed;
  }
  const Receipt* r = e.receipt();
  return std::to_string(r->by.value) +
         (e.kind() == EventKind::kSeen ? " saw up to " : " received up to ") +
         id + missed;
}

}  // namespace natter
