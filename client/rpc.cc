#include "client/rpc.h"

#include <sysexits.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <iostream>
#include <map>
#include <set>
#include <vector>

#include "client/json_events.h"
#include "common/error_codes.h"
#include "common/text.h"
#include "common/validate.h"

namespace natter {
namespace {

// Requests read ahead of their replies; past this, standard input waits.
constexpr size_t kWindow = 1024;
// A longer line is refused whole (the longest valid request is far below).
constexpr size_t kMaxLine = 1 << 20;

// A positive whole number, given as a JSON number or a string of digits
// (message ids exceed 2^53, so scripts keep them as strings).
std::optional<uint64_t> PositiveNumber(const nlohmann::json& v) {
  if (v.is_number_unsigned()) {
    uint64_t n = v.get<uint64_t>();
    return n == 0 ? std::nullopt : std::optional<uint64_t>(n);
  }
  if (v.is_string()) {
    auto n = ParseUint(v.get<std::string>());
    return n && *n != 0 ? n : std::nullopt;
  }
  return std::nullopt;
}

// The params of one method, taken one by one; anything left over, of a
// wrong type or missing is an invalid-params error.
class Params {
 public:
  Params(const nlohmann::json& params, std::string method)
      : params_(params), method_(std::move(method)) {
    for (const auto& item : params_.items()) left_.insert(item.key());
  }
  bool Has(const char* name) const { return params_.contains(name); }
  const nlohmann::json* Take(const char* name) {
    left_.erase(name);
    auto it = params_.find(name);
    return it == params_.end() ? nullptr : &*it;
  }
  // A number above 0; fails when missing unless optional.
  std::optional<uint64_t> Number(const char* name, bool optional = false) {
    const nlohmann::json* v = Take(name);
    if (v == nullptr) {
      if (!optional) Fail(std::string("'") + name + "' is missing");
      return std::nullopt;
    }
    auto n = PositiveNumber(*v);
    if (!n) Fail(std::string("'") + name + "' is a number above 0 (or a string of digits)");
    return n;
  }
  std::optional<std::string> String(const char* name, bool optional = false) {
    const nlohmann::json* v = Take(name);
    if (v == nullptr) {
      if (!optional) Fail(std::string("'") + name + "' is missing");
      return std::nullopt;
    }
    if (!v->is_string()) {
      Fail(std::string("'") + name + "' is a string");
      return std::nullopt;
    }
    return v->get<std::string>();
  }
  // Called last: names what was not taken.
  void CheckAllTaken() {
    if (!left_.empty()) Fail("'" + *left_.begin() + "' is not a parameter of " + method_);
  }
  void Fail(const std::string& message) {
    if (error_.empty()) error_ = message;
  }
  const std::string& error() const { return error_; }

 private:
  const nlohmann::json& params_;
  std::string method_;
  std::set<std::string> left_;
  std::string error_;
};

void ParseMethod(const nlohmann::json& params, RpcCall* c) {
  Params p(params, c->method);
  auto invalid = [&](const std::string& message) {
    c->error = kRpcInvalidParams;
    c->error_message = c->method + ": " + message;
  };
  auto natter_error = [&](const Status& s) {
    c->error = static_cast<int>(s.code());
    c->error_message = c->method + ": " + s.message();
  };
  const std::string& m = c->method;
  if (m == "send") {
    c->peer = UserId(p.Number("to").value_or(0));
    c->text = p.String("text").value_or("");
    c->client_msg_id = p.String("client_msg_id", true).value_or("");
  } else if (m == "react" || m == "unreact" || m == "seen") {
    c->peer = UserId(p.Number("peer").value_or(0));
    c->message = MessageId(p.Number("id").value_or(0));
    if (m == "react") c->emoji = p.String("emoji").value_or("");
  } else if (m == "history") {
    c->history.peer = UserId(p.Number("peer").value_or(0));
    int given = p.Has("at") + p.Has("before") + p.Has("after");
    if (given > 1) p.Fail("give one of 'at', 'before' and 'after'");
    if (const nlohmann::json* at = p.Take("at")) {
      std::optional<uint64_t> t;
      if (at->is_string()) t = ParseTime(at->get<std::string>());
      if (at->is_number_unsigned()) t = at->get<uint64_t>();
      if (!t) p.Fail("'at' is RFC 3339 or milliseconds since the epoch");
      c->history.mode = HistoryMode::kAt;
      c->history.bound = t.value_or(0);
    }
    for (auto [name, mode] : {std::pair{"before", HistoryMode::kBefore},
                              std::pair{"after", HistoryMode::kAfter}}) {
      if (!p.Has(name)) continue;
      c->history.mode = mode;
      c->history.bound = p.Number(name).value_or(0);
    }
    if (p.Has("limit")) {
      uint64_t limit = p.Number("limit").value_or(0);
      if (limit > kMaxHistoryPage) {
        p.Fail("'limit' is 1 to " + std::to_string(kMaxHistoryPage));
      }
      c->history.limit = static_cast<uint32_t>(limit);
    }
  } else if (m == "chats") {
    // The page after the chat with before_peer whose last message is before.
    if (p.Has("before") != p.Has("before_peer")) p.Fail("give both 'before' and 'before_peer', or neither");
    if (p.Has("before")) {
      c->chats.before_id = MessageId(p.Number("before").value_or(0));
      c->chats.before_peer = UserId(p.Number("before_peer").value_or(0));
    }
  } else {
    c->error = kRpcMethodNotFound;
    c->error_message = "'" + m + "' is not a method (send, react, unreact, seen, history, chats)";
    return;
  }
  p.CheckAllTaken();
  if (!p.error().empty()) return invalid(p.error());
  if (m == "send") {
    natter::Send check;
    check.to = c->peer;
    check.text = c->text;
    check.client_msg_id = c->client_msg_id.empty() ? "x" : c->client_msg_id;
    Status s = ValidateSend(check);
    if (!s.ok()) natter_error(s);
  } else if (m == "react" || m == "unreact" || m == "seen") {
    natter::React check{c->peer, c->message, c->emoji};
    Status s = ValidateReact(check);
    if (!s.ok()) natter_error(s);
  }
}

// Set when standard output is gone (the reader closed the pipe): nothing
// more can be told, so natter rpc stops.
bool g_output_lost = false;

void PrintLine(const nlohmann::json& j) {
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size() ||
      std::fflush(stdout) != 0) {
    g_output_lost = true;
  }
}

}  // namespace

RpcCall ParseRpcLine(const std::string& line) {
  RpcCall c;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    c.error = kRpcParseError;
    c.error_message = std::string("not JSON: ") + e.what();
    return c;
  }
  auto invalid = [&](const std::string& message) {
    c.error = kRpcInvalidRequest;
    c.error_message = message;
    return c;
  };
  if (!j.is_object()) return invalid("a request is a JSON object");
  if (j.contains("id")) {
    const nlohmann::json& id = j["id"];
    if (!id.is_string() && !id.is_number() && !id.is_null()) {
      return invalid("'id' is a string or a number");
    }
    c.id = id;
  } else {
    c.notification = true;
  }
  for (const auto& item : j.items()) {
    const std::string& k = item.key();
    if (k != "jsonrpc" && k != "id" && k != "method" && k != "params") {
      return invalid("'" + k + "' is not a member of a request");
    }
  }
  if (j.contains("jsonrpc") && j["jsonrpc"] != "2.0") return invalid("'jsonrpc' is \"2.0\"");
  if (!j.contains("method") || !j["method"].is_string()) {
    return invalid("'method' is missing or not a string");
  }
  c.method = j["method"].get<std::string>();
  nlohmann::json params = nlohmann::json::object();
  if (j.contains("params")) {
    if (!j["params"].is_object()) {
      c.error = kRpcInvalidParams;
      c.error_message = "'params' is an object (by name)";
      return c;
    }
    params = j["params"];
  }
  ParseMethod(params, &c);
  return c;
}

nlohmann::json RpcResult(const nlohmann::json& id, nlohmann::json result) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

nlohmann::json RpcErrorReply(const nlohmann::json& id, int code,
                             const std::string& message, const char* name) {
  nlohmann::json error = {{"code", code}, {"message", message}};
  if (name != nullptr) error["data"] = {{"error", name}};
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(error)}};
}

int RunRpc(const ClientOptions& given, int wait_ms,
           const std::atomic<bool>& interrupted) {
  ClientOptions options = given;
  options.receive = true;
  options.watch_link = true;
  Client client(options);
  Status connected = client.Connect();
  if (!connected.ok()) {
    std::cerr << "natter: rpc: " << connected.message() << "\n";
    return ExitCodeFor(connected.code());
  }

  struct Owed {
    nlohmann::json id;
    std::string method;
    bool reply;  // false: a notification
  };
  std::map<uint64_t, Owed> owed;                        // request id -> request
  std::map<std::string, std::vector<Owed>> owed_sends;  // client_msg_id -> sends
  size_t owed_count = 0;
  Status over;  // Incoming::SessionOver

  auto reply_error = [](const Owed& o, const Status& s) {
    if (o.reply) {
      PrintLine(RpcErrorReply(o.id, static_cast<int>(s.code()), o.method + ": " + s.message(),
                              ErrorCodeName(s.code())));
    }
  };
  auto carry_out = [&](const std::string& line) {
    RpcCall c = ParseRpcLine(line);
    if (c.error != 0) {
      if (c.notification && c.error != kRpcParseError && c.error != kRpcInvalidRequest) return;
      const char* name = c.error > 0 ? ErrorCodeName(static_cast<ErrorCode>(c.error)) : nullptr;
      PrintLine(RpcErrorReply(c.id, c.error, c.error_message, name));
      return;
    }
    Owed o{c.id, c.method, !c.notification};
    ++owed_count;
    if (c.method == "send") {
      std::string cmid = client.Send(c.peer, c.text, c.client_msg_id);
      owed_sends[cmid].push_back(std::move(o));
      return;
    }
    uint64_t request = 0;
    if (c.method == "react" || c.method == "unreact") {
      request = client.React(c.peer, c.message, c.emoji);
    } else if (c.method == "seen") {
      request = client.MarkSeen(c.peer, c.message);
    } else if (c.method == "history") {
      request = client.GetHistory(c.history);
    } else {
      request = client.GetChats(c.chats);
    }
    owed[request] = std::move(o);
  };
  auto take = [&](const Incoming& in) {
    switch (in.kind) {
      case Incoming::Kind::kEvent:
      case Incoming::Kind::kLink:
        PrintLine({{"jsonrpc", "2.0"}, {"method", "event"}, {"params", ToJson(in)}});
        return;
      case Incoming::Kind::kProcessed:
      case Incoming::Kind::kError: {
        if (in.SessionOver()) {
          over = in.error;
          return;
        }
        const std::string& cmid = in.kind == Incoming::Kind::kProcessed
                                      ? in.processed.client_msg_id
                                      : in.client_msg_id;
        std::vector<Owed> done;
        if (auto it = owed_sends.find(cmid); !cmid.empty() && it != owed_sends.end()) {
          done = std::move(it->second);
          owed_sends.erase(it);
        } else if (auto it = owed.find(in.request); it != owed.end()) {
          done.push_back(std::move(it->second));
          owed.erase(it);
        }
        for (const Owed& o : done) {
          --owed_count;
          if (in.kind == Incoming::Kind::kError) {
            reply_error(o, in.error);
            continue;
          }
          nlohmann::json result = ToJson(in);
          result.erase("type");
          if (o.reply) PrintLine(RpcResult(o.id, std::move(result)));
        }
        return;
      }
      case Incoming::Kind::kOk:
      case Incoming::Kind::kHistory:
      case Incoming::Kind::kChats: {
        auto it = owed.find(in.request);
        if (it == owed.end()) return;
        Owed o = std::move(it->second);
        owed.erase(it);
        --owed_count;
        if (!o.reply) return;
        nlohmann::json result = nlohmann::json::object();
        if (in.kind == Incoming::Kind::kHistory) {
          result["messages"] = nlohmann::json::array();
          for (const HistoryItem& item : in.history.messages) {
            result["messages"].push_back(ToJson(item));
          }
          result["more"] = in.history.more;
        } else if (in.kind == Incoming::Kind::kChats) {
          result["chats"] = nlohmann::json::array();
          for (const ChatItem& chat : in.chats.chats) result["chats"].push_back(ToJson(chat));
          result["more"] = in.chats.more;
        }
        PrintLine(RpcResult(o.id, std::move(result)));
        return;
      }
      case Incoming::Kind::kMailbox:
        return;
    }
  };

  std::string buffer;
  bool input_open = true;
  bool discarding = false;  // inside a line longer than kMaxLine
  auto input_end = std::chrono::steady_clock::time_point::max();
  std::vector<Incoming> in;
  char chunk[65536];
  while (!interrupted && !g_output_lost && over.ok()) {
    if (!input_open && owed_count == 0) break;
    if (!input_open && std::chrono::steady_clock::now() >= input_end) break;
    bool want_input = input_open && owed_count < kWindow;
    zmq::pollitem_t items[2] = {client.PollItem(), {nullptr, STDIN_FILENO, ZMQ_POLLIN, 0}};
    int rc = zmq_poll(items, want_input ? 2 : 1, 100);
    if (want_input && rc > 0 && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) {
      ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
      if (n < 0 && errno != EINTR && errno != EAGAIN) n = 0;
      if (n == 0) {
        input_open = false;
        input_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
        if (!buffer.empty() && !discarding) carry_out(buffer);
        buffer.clear();
      }
      for (ssize_t i = 0; i < n; ++i) {
        char ch = chunk[i];
        if (ch != '\n') {
          if (!discarding) buffer += ch;
          if (buffer.size() > kMaxLine) {
            PrintLine(RpcErrorReply(nullptr, kRpcInvalidRequest,
                                    "a request line is at most " +
                                        std::to_string(kMaxLine) + " bytes"));
            buffer.clear();
            discarding = true;
          }
          continue;
        }
        if (!discarding && !buffer.empty() && buffer.back() == '\r') buffer.pop_back();
        if (!discarding && buffer.find_first_not_of(" \t") != std::string::npos) {
          carry_out(buffer);
        }
        buffer.clear();
        discarding = false;
      }
    }
    in.clear();
    client.Poll(0, &in);
    for (const Incoming& item : in) take(item);
  }
  // Whatever is still owed gets an error reply, so a script waiting on an
  // id is never left hanging.
  Status late(ErrorCode::kUnavailable,
              interrupted ? "interrupted before the answer came"
                          : "no answer within " + std::to_string(wait_ms / 1000) + "s");
  if (!over.ok()) late = over;
  for (const auto& [request, o] : owed) reply_error(o, late);
  for (const auto& [cmid, list] : owed_sends) {
    for (const Owed& o : list) reply_error(o, late);
  }
  if (g_output_lost) {
    // What was printed last may not have been read: not acknowledged
    // here (the library may have acknowledged some already; history has
    // them all).
    std::cerr << "natter: rpc: standard output is closed\n";
    return 1;
  }
  if (!over.ok()) {
    std::cerr << "natter: rpc: " << over.message() << "\n";
    return ExitCodeFor(over.code());
  }
  Status flushed = client.Flush();
  if (owed_count > 0) {
    std::cerr << "natter: rpc: " << owed_count << " requests had no answer\n";
    return interrupted ? 1 : EX_UNAVAILABLE;
  }
  if (!flushed.ok()) {
    std::cerr << "natter: rpc: " << flushed.message() << "\n";
    return ExitCodeFor(flushed.code());
  }
  return EX_OK;
}

}  // namespace natter
