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
    if (!n)
      Fail(std::string("'") + name +
           "' is a number above 0 (or a string of digits)");
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
    if (!left_.empty())
      Fail("'" + *left_.begin() + "' is not a parameter of " + method_);
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

// The parsers of each method's params, into the call.

void ParseSend(Params& p, RpcCall* c) {
  c->peer = UserId(p.Number("to").value_or(0));
  c->text = p.String("text").value_or("");
  c->client_msg_id = p.String("client_msg_id", true).value_or("");
}

// react, unreact and seen: a message of the conversation with peer.
void ParseMessageRef(Params& p, RpcCall* c) {
  c->peer = UserId(p.Number("peer").value_or(0));
  c->message = MessageId(p.Number("id").value_or(0));
  if (c->method == "react") c->emoji = p.String("emoji").value_or("");
}

void ParseHistory(Params& p, RpcCall* c) {
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
}

// The page after the chat with before_peer whose last message is before.
void ParseChats(Params& p, RpcCall* c) {
  if (p.Has("before") != p.Has("before_peer"))
    p.Fail("give both 'before' and 'before_peer', or neither");
  if (p.Has("before")) {
    c->chats.before_id = MessageId(p.Number("before").value_or(0));
    c->chats.before_peer = UserId(p.Number("before_peer").value_or(0));
  }
}

// natter's own checks of a well-formed call (text length, emoji), as the
// server makes them.
Status CheckSend(const RpcCall& c) {
  natter::Send check;
  check.to = c.peer;
  check.text = c.text;
  check.client_msg_id = c.client_msg_id.empty() ? "x" : c.client_msg_id;
  return ValidateSend(check);
}

Status CheckMessageRef(const RpcCall& c) {
  return ValidateReact(natter::React{c.peer, c.message, c.emoji});
}

Status NoCheck(const RpcCall&) { return Status::Ok(); }

// The request table.
struct Method {
  const char* name;
  void (*parse)(Params& p, RpcCall* c);
  Status (*check)(const RpcCall& c);
};

constexpr Method kMethods[] = {
    {"send", ParseSend, CheckSend},
    {"react", ParseMessageRef, CheckMessageRef},
    {"unreact", ParseMessageRef, CheckMessageRef},
    {"seen", ParseMessageRef, CheckMessageRef},
    {"history", ParseHistory, NoCheck},
    {"chats", ParseChats, NoCheck},
};

void ParseMethod(const nlohmann::json& params, RpcCall* c) {
  const Method* method = nullptr;
  for (const Method& m : kMethods) {
    if (c->method == m.name) method = &m;
  }
  if (method == nullptr) {
    c->error = kRpcMethodNotFound;
    c->error_message =
        "'" + c->method +
        "' is not a method (send, react, unreact, seen, history, chats)";
    return;
  }
  Params p(params, c->method);
  method->parse(p, c);
  p.CheckAllTaken();
  if (!p.error().empty()) {
    c->error = kRpcInvalidParams;
    c->error_message = c->method + ": " + p.error();
    return;
  }
  Status s = method->check(*c);
  if (!s.ok()) {
    c->error = static_cast<int>(s.code());
    c->error_message = c->method + ": " + s.message();
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
  if (j.contains("jsonrpc") && j["jsonrpc"] != "2.0")
    return invalid("'jsonrpc' is \"2.0\"");
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

namespace {

// One natter rpc session over a connected client: request lines from
// standard input are carried out, and each reply (by the request's id) and
// each event goes out as a line on standard output.
class RpcSession {
 public:
  RpcSession(Client* client, int wait_ms, const std::atomic<bool>& interrupted)
      : client_(client), wait_ms_(wait_ms), interrupted_(interrupted) {}

  // Runs until standard input ends and every reply owed has come (or
  // wait_ms has passed since), the session is over, standard output is
  // closed or `interrupted`; returns the exit code.
  int Run();

 private:
  // A request waiting for its answer.
  struct Owed {
    nlohmann::json id;
    std::string method;
    bool reply;  // false: a notification
  };

  bool Going() const;
  // Waits (at most 100 ms) for input or answers, and takes them.
  void Turn();

  // The reading of input: a chunk of standard input cut into request lines.
  void ReadInput();
  void TakeInput(const char* bytes, size_t n);
  void EndOfLine();
  void EndOfInput();

  // The request table: a line to the client's call.
  void CarryOut(const std::string& line);
  uint64_t Ask(const RpcCall& c);

  // What is owed, settled by what arrives.
  void Take(const Incoming& in);
  void TakeSendAnswer(const Incoming& in);
  void TakeRequestAnswer(const Incoming& in);
  std::vector<Owed> Settle(const Incoming& in);
  std::optional<Owed> SettleRequest(uint64_t request);
  // Whatever is still owed gets an error reply, so a script waiting on an
  // id is never left hanging.
  void FailOwed();
  int ExitCode();

  // The writing of replies and events.
  void PrintLine(const nlohmann::json& j);
  void Reply(const Owed& o, nlohmann::json result);
  void ReplyError(const Owed& o, const Status& s);
  static nlohmann::json PageResult(const Incoming& in);

  Client* client_;
  const int wait_ms_;
  const std::atomic<bool>& interrupted_;

  std::map<uint64_t, Owed> owed_;  // request id -> request
  std::map<std::string, std::vector<Owed>>
      owed_sends_;  // client_msg_id -> sends
  size_t owed_count_ = 0;
  Status over_;  // Incoming::SessionOver

  std::string buffer_;  // the line read so far
  bool input_open_ = true;
  bool discarding_ = false;  // inside a line longer than kMaxLine
  std::chrono::steady_clock::time_point input_end_ =
      std::chrono::steady_clock::time_point::max();

  // Set when standard output is gone (the reader closed the pipe): nothing
  // more can be told, so natter rpc stops.
  bool output_lost_ = false;
  std::vector<Incoming> in_;
};

int RpcSession::Run() {
  while (Going()) Turn();
  FailOwed();
  return ExitCode();
}

bool RpcSession::Going() const {
  if (interrupted_ || output_lost_ || !over_.ok()) return false;
  if (input_open_) return true;
  return owed_count_ > 0 && std::chrono::steady_clock::now() < input_end_;
}

void RpcSession::Turn() {
  bool want_input = input_open_ && owed_count_ < kWindow;
  zmq::pollitem_t items[2] = {client_->PollItem(),
                              {nullptr, STDIN_FILENO, ZMQ_POLLIN, 0}};
  int rc = zmq_poll(items, want_input ? 2 : 1, 100);
  if (want_input && rc > 0 && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR)))
    ReadInput();
  in_.clear();
  client_->Poll(0, &in_);
  for (const Incoming& item : in_) Take(item);
}

void RpcSession::ReadInput() {
  char chunk[65536];
  ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
  if (n < 0 && errno != EINTR && errno != EAGAIN) n = 0;
  if (n == 0) EndOfInput();
  if (n > 0) TakeInput(chunk, static_cast<size_t>(n));
}

void RpcSession::TakeInput(const char* bytes, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    char ch = bytes[i];
    if (ch == '\n') {
      EndOfLine();
      continue;
    }
    if (!discarding_) buffer_ += ch;
    if (buffer_.size() > kMaxLine) {
      PrintLine(RpcErrorReply(
          nullptr, kRpcInvalidRequest,
          "a request line is at most " + std::to_string(kMaxLine) + " bytes"));
      buffer_.clear();
      discarding_ = true;
    }
  }
}

// A line ends: carried out unless blank or too long.
void RpcSession::EndOfLine() {
  if (!discarding_ && !buffer_.empty() && buffer_.back() == '\r')
    buffer_.pop_back();
  if (!discarding_ && buffer_.find_first_not_of(" \t") != std::string::npos) {
    CarryOut(buffer_);
  }
  buffer_.clear();
  discarding_ = false;
}

// The replies still owed have wait_ms from now.  A last line without its
// newline counts as it is.
void RpcSession::EndOfInput() {
  input_open_ = false;
  input_end_ =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms_);
  if (!buffer_.empty() && !discarding_) CarryOut(buffer_);
  buffer_.clear();
}

void RpcSession::CarryOut(const std::string& line) {
  RpcCall c = ParseRpcLine(line);
  if (c.error != 0) {
    if (c.notification && c.error != kRpcParseError &&
        c.error != kRpcInvalidRequest)
      return;
    const char* name =
        c.error > 0 ? ErrorCodeName(static_cast<ErrorCode>(c.error)) : nullptr;
    PrintLine(RpcErrorReply(c.id, c.error, c.error_message, name));
    return;
  }
  Owed o{c.id, c.method, !c.notification};
  ++owed_count_;
  if (c.method == "send") {
    std::string cmid = client_->Send(c.peer, c.text, c.client_msg_id);
    owed_sends_[cmid].push_back(std::move(o));
    return;
  }
  owed_[Ask(c)] = std::move(o);
}

// The client's call for each method but send; returns its request id.
uint64_t RpcSession::Ask(const RpcCall& c) {
  if (c.method == "react" || c.method == "unreact") {
    return client_->React(c.peer, c.message, c.emoji);
  }
  if (c.method == "seen") return client_->MarkSeen(c.peer, c.message);
  if (c.method == "history") return client_->GetHistory(c.history);
  return client_->GetChats(c.chats);
}

void RpcSession::Take(const Incoming& in) {
  switch (in.kind) {
    case Incoming::Kind::kEvent:
    case Incoming::Kind::kLink:
      PrintLine(
          {{"jsonrpc", "2.0"}, {"method", "event"}, {"params", ToJson(in)}});
      return;
    case Incoming::Kind::kProcessed:
    case Incoming::Kind::kError:
      TakeSendAnswer(in);
      return;
    case Incoming::Kind::kOk:
    case Incoming::Kind::kHistory:
    case Incoming::Kind::kChats:
      TakeRequestAnswer(in);
      return;
    case Incoming::Kind::kMailbox:
      return;
  }
}

// A processed receipt, or an error (for a send or another request).
void RpcSession::TakeSendAnswer(const Incoming& in) {
  if (in.SessionOver()) {
    over_ = in.error;
    return;
  }
  for (const Owed& o : Settle(in)) {
    if (in.kind == Incoming::Kind::kError) {
      ReplyError(o, in.error);
      continue;
    }
    nlohmann::json result = ToJson(in);
    result.erase("type");
    Reply(o, std::move(result));
  }
}

void RpcSession::TakeRequestAnswer(const Incoming& in) {
  std::optional<Owed> o = SettleRequest(in.request);
  if (o) Reply(*o, PageResult(in));
}

// What `in` answers: every send of its client_msg_id, else the request of
// its id.  It is owed no longer.
std::vector<RpcSession::Owed> RpcSession::Settle(const Incoming& in) {
  const std::string& cmid = in.kind == Incoming::Kind::kProcessed
                                ? in.processed.client_msg_id
                                : in.client_msg_id;
  std::vector<Owed> done;
  if (auto it = owed_sends_.find(cmid);
      !cmid.empty() && it != owed_sends_.end()) {
    done = std::move(it->second);
    owed_sends_.erase(it);
    owed_count_ -= done.size();
  } else if (std::optional<Owed> o = SettleRequest(in.request)) {
    done.push_back(std::move(*o));
  }
  return done;
}

std::optional<RpcSession::Owed> RpcSession::SettleRequest(uint64_t request) {
  auto it = owed_.find(request);
  if (it == owed_.end()) return std::nullopt;
  Owed o = std::move(it->second);
  owed_.erase(it);
  --owed_count_;
  return o;
}

void RpcSession::FailOwed() {
  Status late(ErrorCode::kUnavailable,
              interrupted_ ? "interrupted before the answer came"
                           : "no answer within " +
                                 std::to_string(wait_ms_ / 1000) + "s");
  if (!over_.ok()) late = over_;
  for (const auto& [request, o] : owed_) ReplyError(o, late);
  for (const auto& [cmid, list] : owed_sends_) {
    for (const Owed& o : list) ReplyError(o, late);
  }
}

int RpcSession::ExitCode() {
  if (output_lost_) {
    // What was printed last may not have been read: not acknowledged
    // here (the library may have acknowledged some already; history has
    // them all).
    std::cerr << "natter: rpc: standard output is closed\n";
    return 1;
  }
  if (!over_.ok()) {
    std::cerr << "natter: rpc: " << over_.message() << "\n";
    return ExitCodeFor(over_.code());
  }
  Status flushed = client_->Flush();
  if (owed_count_ > 0) {
    std::cerr << "natter: rpc: " << owed_count_ << " requests had no answer\n";
    return interrupted_ ? 1 : EX_UNAVAILABLE;
  }
  if (!flushed.ok()) {
    std::cerr << "natter: rpc: " << flushed.message() << "\n";
    return ExitCodeFor(flushed.code());
  }
  return EX_OK;
}

void RpcSession::PrintLine(const nlohmann::json& j) {
  std::string line =
      j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line += '\n';
  if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size() ||
      std::fflush(stdout) != 0) {
    output_lost_ = true;
  }
}

void RpcSession::Reply(const Owed& o, nlohmann::json result) {
  if (o.reply) PrintLine(RpcResult(o.id, std::move(result)));
}

void RpcSession::ReplyError(const Owed& o, const Status& s) {
  if (o.reply) {
    PrintLine(RpcErrorReply(o.id, static_cast<int>(s.code()),
                            o.method + ": " + s.message(),
                            ErrorCodeName(s.code())));
  }
}

// The result of react, unreact and seen ({}), history and chats (a page).
nlohmann::json RpcSession::PageResult(const Incoming& in) {
  nlohmann::json result = nlohmann::json::object();
  if (in.kind == Incoming::Kind::kHistory) {
    result["messages"] = nlohmann::json::array();
    for (const HistoryItem& item : in.history.messages) {
      result["messages"].push_back(ToJson(item));
    }
    result["more"] = in.history.more;
  } else if (in.kind == Incoming::Kind::kChats) {
    result["chats"] = nlohmann::json::array();
    for (const ChatItem& chat : in.chats.chats)
      result["chats"].push_back(ToJson(chat));
    result["more"] = in.chats.more;
  }
  return result;
}

}  // namespace

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
  return RpcSession(&client, wait_ms, interrupted).Run();
}

}  // namespace natter
