#include "client/client.h"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>

#include "common/curve.h"
#include "common/ids.h"
#include "common/net.h"
#include "common/text.h"
#include "common/token.h"

namespace natter {
namespace {

// With a token source, a fresh token is asked for this long before the
// session's expires (frontd ends the session kTokenClockSkew after it), and
// at most this often while it does not come.
constexpr uint64_t kRenewAheadS = 30;
constexpr int kRenewEveryMs = 5000;

// MoveServer's reason after a busy refusal (which makes it wait longer).
constexpr char kBusy[] = "busy";

// An error frontd sends unasked (corr 0) that ends the session.
bool EndsSession(ErrorCode code) {
  return code == ErrorCode::kTokenExpired ||
         code == ErrorCode::kTokenUnknownKey ||
         code == ErrorCode::kTokenMalformed ||
         code == ErrorCode::kTokenBadSignature;
}

uint64_t NowSeconds() { return NowMs() / 1000; }

// The seed of a client's jitter.
uint32_t RandomSeed() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to start");
  return randombytes_random();
}

std::string NewClientMsgId() {
  uint8_t raw[12];
  randombytes_buf(raw, sizeof raw);
  return ToHex(raw, sizeof raw);
}

void MakeDirs(const std::string& path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      ::mkdir(path.substr(0, i).c_str(), 0700);
    }
  }
}

}  // namespace

Client::Client(ClientOptions options, zmq::context_t* ctx)
    : options_(std::move(options)),
      ctx_(ctx),
      requests_(
          {options_.timeout_ms, options_.retry_ms, options_.max_in_flight},
          [this](const std::string& frame) { Transmit(frame); }, RandomSeed()),
      mailbox_({options_.gap_grace_ms, options_.resync_ms}) {
  if (ctx_ == nullptr) {
    own_ctx_ = std::make_unique<zmq::context_t>(1);
    ctx_ = own_ctx_.get();
  }
  device_ = options_.device;
  servers_ = SplitList(options_.server);
  if (servers_.empty()) servers_.push_back(options_.server);
  for (const std::string& server : servers_) {
    Endpoint endpoint;  // each one checked now: a move never fails on it
    if (!ParseEndpoint(server, &endpoint).ok()) {
      throw std::invalid_argument(
          server + ": the server key after '@' must be " + kCurveKeyForms);
    }
  }
  if (servers_.size() > 1) {
    uint32_t pick = 0;
    randombytes_buf(&pick, sizeof pick);
    current_ = pick % servers_.size();
  }
  OpenSocket();
}

Client::~Client() = default;

void Client::OpenSocket() {
  socket_ = MakeSocket(*ctx_, zmq::socket_type::dealer, 100);
  // What frontd queues for a device, no more: an application that stops
  // reading holds a bounded queue here and at frontd, and the events past
  // it are fetched from the mailbox when it reads again.
  socket_.set(zmq::sockopt::rcvhwm, kClientHwm);
  // The client's own pings (ping_ms when idle) keep its session; ZMTP
  // heartbeats every second from every client would weigh on frontd.
  socket_.set(zmq::sockopt::heartbeat_ivl, 0);
  socket_.set(zmq::sockopt::reconnect_ivl, 100);
  socket_.set(zmq::sockopt::reconnect_ivl_max, 2000);
  Endpoint endpoint;
  if (!ParseEndpoint(server(), &endpoint).ok()) {
    throw std::invalid_argument(
        server() + ": the server key after '@' must be " + kCurveKeyForms);
  }
  CurveKey server_key{};
  bool curve = endpoint.has_key;
  if (curve) {
    server_key = endpoint.server_key;
  } else if (!options_.server_key.empty()) {
    if (!ParseCurveKey(options_.server_key, &server_key)) {
      throw std::invalid_argument(
          std::string("the server key is not a CURVE key (") + kCurveKeyForms +
          ")");
    }
    curve = true;
  }
  if (curve) {
    // The device's own CURVE keypair: kept in the state folder (0600) so a
    // device keeps one identity, or made for this run when there is none.
    std::string pub, sec;
    std::string path = options_.state_dir.empty()
                           ? std::string()
                           : options_.state_dir + "/" + device_ + ".key";
    std::ifstream in(path);
    if (!path.empty() && in && std::getline(in, pub) && std::getline(in, sec) &&
        pub.size() == 40 && sec.size() == 40) {
      // loaded
    } else {
      char p[41], s[41];
      if (zmq_curve_keypair(p, s) != 0) throw zmq::error_t();
      pub = p;
      sec = s;
      if (!path.empty()) {
        MakeDirs(options_.state_dir);
        WriteNewFile(path, pub + "\n" + sec + "\n", 0600);
      }
    }
    SetServerKey(server_key);
    socket_.set(zmq::sockopt::curve_publickey, pub);
    socket_.set(zmq::sockopt::curve_secretkey, sec);
  }
  // Until the welcome, watch the handshake: a frontd that is full or
  // refuses the device's key says so there, before any frame.  With
  // watch_link, the connection's later life too.
  static std::atomic<uint64_t> monitors{0};
  std::string monitor = "inproc://natter-client-handshake-" +
                        std::to_string(::getpid()) + "-" +
                        std::to_string(++monitors);
  int events = ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
  if (options_.watch_link) {
    events |= ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED;
  }
  if (zmq_socket_monitor(socket_.handle(), monitor.c_str(), events) == 0) {
    handshake_ = zmq::socket_t(*ctx_, zmq::socket_type::pair);
    handshake_.set(zmq::sockopt::linger, 0);
    handshake_.connect(monitor);
  }
  socket_.connect(endpoint.address);
}

void Client::SetServerKey(const CurveKey& key) {
  socket_.set(zmq::sockopt::curve_serverkey,
              zmq::const_buffer(key.data(), key.size()));
}

void Client::MoveServer(const char* why, std::vector<Incoming>* out) {
  if (servers_.size() < 2) return;
  const auto now = Clock::now();
  // One gate for every reason: at most one move a quarter of failover_ms
  // (after a busy refusal, a whole one: the frontds are full, come back
  // later), doubling with jitter at each move that brings no welcome, so
  // that the clients of a frontd gone do not storm the others.  A move
  // asked too early is made by CheckServer when its time comes.
  if (now < next_move_at_) {
    move_wanted_ = why;
    return;
  }
  move_wanted_ = nullptr;
  const bool busy = std::strcmp(why, kBusy) == 0;
  const int base =
      std::max(busy ? options_.failover_ms : options_.failover_ms / 4, 1);
  const int rounds =
      static_cast<int>(std::min<uint64_t>(moves_without_welcome_, 5));
  uint32_t pick = 0;
  randombytes_buf(&pick, sizeof pick);
  const int gap =
      (base << rounds) / 2 + static_cast<int>(pick % (base << rounds));
  next_move_at_ = now + std::chrono::milliseconds(gap);
  ++moves_without_welcome_;
  // Another at random: the clients of a frontd that went spread over the
  // others.
  randombytes_buf(&pick, sizeof pick);
  current_ = (current_ + 1 + pick % (servers_.size() - 1)) % servers_.size();
  ++moves_;
  // The new connection is waited on as a request is: silence for
  // failover_ms moves again.
  awaiting_ = true;
  awaiting_since_ = now;
  probed_ = false;
  disconnected_ = false;
  if (handshake_) {
    zmq_socket_monitor(socket_.handle(), nullptr, 0);
    handshake_.close();
  }
  socket_.close();
  OpenSocket();
  if (options_.watch_link && out != nullptr && !link_down_) {
    Incoming in;
    in.kind = Incoming::Kind::kLink;
    in.online = false;
    out->push_back(std::move(in));
  }
  if (options_.watch_link) {
    link_down_ = true;  // reported online again with the welcome
    heard_since_down_ = false;
  }
  // The new frontd knows nothing of this device: hello again (with a
  // fresh token if there is a source); what was on the wire goes again
  // once the welcome comes (a send keeps its client_msg_id, so none is
  // stored twice).
  LoseSession();
  if (requests_.Has(hello_corr_)) {
    requests_.Resend(hello_corr_);
    last_sent_ = now;
  } else {
    SayHello(options_.token);
  }
}

void Client::CheckServer(std::vector<Incoming>* out) {
  if (servers_.size() < 2) return;
  const auto now = Clock::now();
  const auto failover = std::chrono::milliseconds(options_.failover_ms);
  if (move_wanted_ != nullptr) {
    MoveServer(move_wanted_, out);
    return;
  }
  if (disconnected_) {
    MoveServer("connection lost", out);
    return;
  }
  if (!awaiting_) return;
  // A new connection not yet welcomed after moves that brought none waits
  // longer (doubling, up to 8 times failover_ms): the frontds may be
  // working through the handshakes of many clients that moved at once.
  const auto allowed =
      session_ || moves_without_welcome_ < 2
          ? failover
          : failover * (1 << std::min<uint64_t>(moves_without_welcome_ - 1, 3));
  // What came and waits unread is frontd's answer: an application that
  // polls seldom (one thread for thousands of clients) is no sign that
  // frontd went.  Poll reads it next.
  if (now - awaiting_since_ >= allowed / 2 &&
      (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0)
    return;
  if (now - awaiting_since_ >= allowed) {
    MoveServer("no answer", out);
  } else if (!probed_ && now - awaiting_since_ >= allowed / 2) {
    // frontd answers a ping itself (with no-session before a welcome):
    // slow shards are not a lost frontd.  Outside the window of requests,
    // which may be full of those waiting on the shards.
    probed_ = true;
    Header h;
    h.corr = next_corr_++;
    Parts parts;
    parts.push_back(ToMessage(EncodeFrame(h, Ping())));
    SendParts(socket_, parts);
  }
}

template <typename T>
uint64_t Client::Ask(const T& body, const std::string& cmid, bool app) {
  Header h;
  h.corr = next_corr_++;
  h.trace = options_.trace ? 1 : 0;
  requests_.Add(h.corr, FrameOf<T>::kType, EncodeFrame(h, body), cmid, app,
                Clock::now());
  return h.corr;
}

void Client::Transmit(const std::string& frame, bool answered) {
  Parts parts;
  parts.push_back(ToMessage(frame));
  SendParts(socket_, parts);  // if it would block, the retry sends it
  last_sent_ = Clock::now();
  if (answered && !awaiting_) {
    awaiting_ = true;
    awaiting_since_ = last_sent_;
  }
}

void Client::SayHello(const std::string& token) {
  Hello hello;
  hello.token = token;
  hello.device = device_;
  hello_token_ = token;
  hello_corr_ = Ask(hello);
}

Status Client::Connect() {
  std::string token = options_.token;
  if (token.empty() && options_.token_source) {
    Status s = options_.token_source(&token);
    if (!s.ok()) return s;
  }
  SayHello(token);
  auto deadline = Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
  std::vector<Incoming> early;
  while (!session_) {
    auto now = Clock::now();
    if (now >= deadline) {
      // Every frontd refused as busy: say so, not that none answered.
      return last_refusal_.ok() ? NoAnswer() : last_refusal_;
    }
    std::vector<zmq::pollitem_t> items = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    if (handshake_) items.push_back({handshake_.handle(), 0, ZMQ_POLLIN, 0});
    auto wait =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    natter::Poll(items, std::min<long>(wait.count(), 200));
    Status refused = HandshakeRefusal();
    if (!refused.ok() && servers_.size() > 1) {
      last_refusal_ = refused;
      MoveServer(kBusy, nullptr);  // another may have room
    } else if (!refused.ok()) {
      StopHandshakeWatch();
      return refused;
    }
    CheckServer(nullptr);
    zmq::message_t msg;
    while (socket_.recv(msg, zmq::recv_flags::dontwait)) {
      Handle(msg, &early);
      for (const Incoming& in : early) {
        if (in.kind == Incoming::Kind::kError && in.client_msg_id.empty()) {
          return in.error;
        }
      }
      early.clear();
    }
    // The hello is retried like any request (the server may be starting).
    requests_.ResendIfDue(hello_corr_, Clock::now());
  }
  StopHandshakeWatch();
  return Status::Ok();
}

Status Client::HandshakeRefusal() {
  if (!handshake_) return Status::Ok();
  uint16_t id;
  uint32_t value;
  while (RecvMonitorEvent(handshake_, &id, &value)) {
    if (id != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) continue;
    // frontd takes any device key, so a refusal means it is full.
    return Status(ErrorCode::kBusy,
                  server() +
                      " has as many clients as it takes; try again later "
                      "(handshake refused, ZAP status " +
                      std::to_string(value) + ")");
  }
  return Status::Ok();
}

void Client::StopHandshakeWatch() {
  if (!handshake_ || options_.watch_link) return;
  zmq_socket_monitor(socket_.handle(), nullptr, 0);
  handshake_.close();
}

void Client::WatchLink(std::vector<Incoming>* out) {
  uint16_t id;
  uint32_t value;
  while (handshake_ && RecvMonitorEvent(handshake_, &id, &value)) {
    if (id == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && servers_.size() > 1) {
      MoveServer(kBusy, out);  // this one is full: another may have room
      return;                  // the monitor may be another socket's now
    }
    if (id == ZMQ_EVENT_DISCONNECTED) disconnected_ = true;
    if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) disconnected_ = false;
    if (!options_.watch_link) continue;
    if (id == ZMQ_EVENT_DISCONNECTED && !link_down_) {
      link_down_ = true;
      heard_since_down_ = false;
      Incoming in;
      in.kind = Incoming::Kind::kLink;
      in.online = false;
      out->push_back(std::move(in));
    } else if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED && link_down_ && session_) {
      // Connected again: a frontd that restarted has forgotten the
      // session, and says so to this ping (then hello, then the mailbox).
      Ask(Ping());
    }
  }
  if (link_down_ && heard_since_down_ && session_) {
    link_down_ = false;
    Incoming in;
    in.kind = Incoming::Kind::kLink;
    in.online = true;
    out->push_back(std::move(in));
  }
}

std::string Client::Send(UserId to, const std::string& text,
                         std::string client_msg_id) {
  if (client_msg_id.empty()) client_msg_id = NewClientMsgId();
  natter::Send send;
  send.client_msg_id = client_msg_id;
  send.to = to;
  send.text = text;
  Ask(send, client_msg_id);
  return client_msg_id;
}

uint64_t Client::React(UserId peer, MessageId id,
                       std::optional<std::string> emoji) {
  natter::React react;
  react.peer = peer;
  react.id = id;
  react.emoji = std::move(emoji);
  return Ask(react);
}

uint64_t Client::MarkSeen(UserId peer, MessageId id) {
  natter::MarkSeen seen;
  seen.peer = peer;
  seen.id = id;
  return Ask(seen);
}

uint64_t Client::GetHistory(const History& query) { return Ask(query); }

Chats NextChatsPage(const ChatsReply& page) {
  Chats next;
  if (!page.chats.empty()) {
    next.before_id = page.chats.back().last_id;
    next.before_peer = page.chats.back().peer;
  }
  return next;
}

uint64_t Client::GetChats(const Chats& query) { return Ask(query); }

uint64_t Client::GetMailbox(Seq after, uint32_t limit) {
  Sync sync;
  sync.from_cursor = false;
  sync.after = after;
  sync.limit = limit;
  return Ask(sync, "", true);
}

void Client::Handle(const zmq::message_t& msg, std::vector<Incoming>* out) {
  Frame f;
  if (!DecodeFrame(msg.data(), msg.size(), &f).ok()) return;
  heard_since_down_ = true;
  awaiting_ = false;
  probed_ = false;
  disconnected_ = false;
  if (f.type() == MsgType::kEvent) {
    Event ev;
    if (options_.receive && DecodeBody(f, &ev).ok() && ev.user == user_) {
      mailbox_.TakeLive(ev);
    }
    return;
  }
  if (f.header.corr == 0) {
    TakeUnasked(f, out);
    return;
  }
  // Not there: an answer to a retry already answered.
  if (!requests_.Has(f.header.corr)) return;
  if (f.type() == MsgType::kError) {
    TakeError(f, out);
    return;
  }
  if (!requests_.Passed(f.header.corr))
    return;  // its answer was handed out already
  switch (f.type()) {
    case MsgType::kWelcome:
      TakeWelcome(f, out);
      return;
    case MsgType::kProcessed:
      TakeProcessed(f, out);
      return;
    case MsgType::kOk:
    case MsgType::kHistoryReply:
    case MsgType::kChatsReply:
      TakeReply(f, out);
      return;
    case MsgType::kSyncReply:
      TakeSyncReply(f, out);
      return;
    case MsgType::kPong:
      requests_.Finish(f.header.corr);
      return;
    default:
      return;
  }
}

void Client::TakeUnasked(const Frame& f, std::vector<Incoming>* out) {
  if (f.type() == MsgType::kMove) {
    // frontd is about to stop: another takes this device now.  With no
    // other, the connection drops when it stops, and comes back to the
    // one that starts in its place.
    MoveServer("asked to move", out);
    return;
  }
  // Otherwise only an error about the session's token means anything.
  Error e;
  if (f.type() == MsgType::kError && DecodeBody(f, &e).ok() &&
      EndsSession(e.code)) {
    SessionEnded(Status(e.code, e.message), out);
  }
}

void Client::TakeWelcome(const Frame& f, std::vector<Incoming>* out) {
  Welcome w;
  if (!DecodeBody(f, &w).ok()) return;
  requests_.Finish(f.header.corr);
  const bool again = user_.value != 0;
  if (again && w.user != user_) {
    // A token source that gave another user's token: this client's
    // mailbox and cursor are not that user's.
    LoseSession();
    Incoming in;
    in.kind = Incoming::Kind::kError;
    in.error =
        Status(ErrorCode::kForbidden,
               "the fresh token is for user " + std::to_string(w.user.value) +
                   ", not " + std::to_string(user_.value));
    out->push_back(std::move(in));
    return;
  }
  options_.token = hello_token_;
  expires_ = w.expires;
  moves_without_welcome_ = 0;
  StopHandshakeWatch();  // kept only with watch_link
  // A fresh token for a session that goes on: nothing else changes.
  if (session_) return;
  user_ = w.user;
  device_ = w.device;
  session_ = true;
  const auto now = Clock::now();
  requests_.Open(now);
  if (!options_.receive) return;
  // First time: catch up from the cursor.  Again: repair whatever the live
  // path lost while the session was gone.
  // An ack sent to the frontd that went may not have reached the shard.
  if (again) acks_.Lost();
  std::optional<Sync> sync =
      again ? mailbox_.Resume(now) : mailbox_.Begin(device_, LoadCursor(), now);
  if (sync) Ask(*sync);
}

void Client::TakeProcessed(const Frame& f, std::vector<Incoming>* out) {
  Processed p;
  if (!DecodeBody(f, &p).ok()) return;
  requests_.Finish(f.header.corr);
  if (options_.receive) mailbox_.TakeOwn(p.seq);
  Incoming in;
  in.kind = Incoming::Kind::kProcessed;
  in.request = f.header.corr;
  // Shown only to a client that asked for traces.
  in.trace = options_.trace ? f.header.trace & ~(1ULL << 63) : 0;
  in.processed = std::move(p);
  out->push_back(std::move(in));
}

void Client::TakeReply(const Frame& f, std::vector<Incoming>* out) {
  Incoming in;
  in.request = f.header.corr;
  if (f.type() == MsgType::kOk) {
    in.kind = Incoming::Kind::kOk;
    Done done;
    // Our own change: its seq is not handed out.
    if (DecodeBody(f, &done).ok() && options_.receive)
      mailbox_.TakeOwn(done.seq);
  } else if (f.type() == MsgType::kHistoryReply) {
    in.kind = Incoming::Kind::kHistory;
    if (!DecodeBody(f, &in.history).ok()) return;
  } else {
    in.kind = Incoming::Kind::kChats;
    if (!DecodeBody(f, &in.chats).ok()) return;
  }
  requests_.Finish(f.header.corr);
  out->push_back(std::move(in));
}

void Client::TakeSyncReply(const Frame& f, std::vector<Incoming>* out) {
  SyncReply reply;
  if (!DecodeBody(f, &reply).ok()) return;
  // Acks have no answer: a sync's reply says where the cursor is.
  if (mailbox_.synced()) acks_.Confirmed(reply.cursor);
  const bool app = requests_.Find(f.header.corr)->app;
  requests_.Finish(f.header.corr);
  if (app) {
    Incoming in;
    in.kind = Incoming::Kind::kMailbox;
    in.request = f.header.corr;
    in.mailbox = std::move(reply);
    out->push_back(std::move(in));
    return;
  }
  if (!mailbox_.synced()) acks_.Begin(reply.cursor);
  if (std::optional<Sync> next = mailbox_.TakePage(reply, Clock::now()))
    Ask(*next);
}

void Client::TakeError(const Frame& f, std::vector<Incoming>* out) {
  Error e;
  if (!DecodeBody(f, &e).ok()) return;
  Status status(e.code, e.message);
  if (status.code() == ErrorCode::kNoSession) {
    // The server forgot us: hello again; this request waits for it.
    LoseSession();
    if (!requests_.Has(hello_corr_)) SayHello(options_.token);
    return;
  }
  if (f.header.corr == hello_corr_ && EndsSession(status.code()) &&
      options_.token_source && requests_.Has(hello_corr_)) {
    // A hello refused for its token (one that ran out while the hello was
    // on its way, after a reconnect): the source may have a fresh one.
    std::string token;
    if (options_.token_source(&token).ok() && token != hello_token_) {
      requests_.Refused(f.header.corr, status.code(), Clock::now());
      SayHello(token);
      return;
    }
  }
  std::optional<RequestQueue::Request> failed =
      requests_.Refused(f.header.corr, status.code(), Clock::now());
  if (failed) Failed(*failed, status, out);
}

void Client::Failed(const RequestQueue::Request& r, const Status& why,
                    std::vector<Incoming>* out) {
  if (r.type == MsgType::kSync && !r.app) mailbox_.SyncFailed();
  // The application waits for no answer, or has had it.
  if (!r.app || r.answered) return;
  Incoming in;
  in.kind = Incoming::Kind::kError;
  in.request = r.type == MsgType::kHello ? 0 : r.corr;
  in.error = why;
  in.client_msg_id = r.client_msg_id;
  out->push_back(std::move(in));
}

Status Client::NoAnswer() const {
  return Status(ErrorCode::kUnavailable,
                "no answer from " + server() + " within " +
                    std::to_string(options_.timeout_ms / 1000) + "s");
}

void Client::LoseSession() {
  session_ = false;
  requests_.Close();
}

void Client::SessionEnded(const Status& why, std::vector<Incoming>* out) {
  LoseSession();
  // A hello with a fresh token already on its way makes a new session.
  if (requests_.Has(hello_corr_)) return;
  Status s = why;
  if (options_.token_source) {
    std::string token;
    Status fresh = options_.token_source(&token);
    if (fresh.ok()) {
      SayHello(token);
      return;
    }
    s = Status(why.code(),
               why.message() + "; no fresh token: " + fresh.message());
  }
  Incoming in;
  in.kind = Incoming::Kind::kError;
  in.error = s;
  out->push_back(std::move(in));
}

void Client::Renew() {
  auto now = Clock::now();
  if (!options_.token_source || expires_ == 0 || now < next_renew_ ||
      NowSeconds() + kRenewAheadS < expires_ || requests_.Has(hello_corr_)) {
    return;
  }
  next_renew_ = now + std::chrono::milliseconds(kRenewEveryMs);
  // Not yet fresh (the file not yet rewritten, say): asked again later;
  // if none comes, the session's end says why.
  std::string token;
  if (options_.token_source(&token).ok() && token != options_.token)
    SayHello(token);
}

void Client::HandOut(std::vector<Incoming>* out, size_t max_events) {
  if (!mailbox_.synced()) return;
  const auto now = Clock::now();
  for (size_t given = 0; max_events == 0 || given < max_events;) {
    MailboxOrder::Next next = mailbox_.TakeNext();
    if (next.kind == MailboxOrder::Next::Kind::kNone) break;
    if (next.kind != MailboxOrder::Next::Kind::kEvent) {
      if (next.kind == MailboxOrder::Next::Kind::kOwnEvent)
        HandOutReceipt(next.event, out);
      acks_.HandedOut(false, now);
      continue;
    }
    const Message* m = next.event.message();
    acks_.HandedOut(m != nullptr && m->from != user_, now);
    Incoming in;
    in.kind = Incoming::Kind::kEvent;
    in.event = std::move(next.event);
    in.missed = next.missed;
    out->push_back(std::move(in));
    ++given;
  }
  mailbox_.NoteGap(now);
}

void Client::HandOutReceipt(const Event& event, std::vector<Incoming>* out) {
  const Message* m = event.message();
  if (m == nullptr) return;
  // One of our sends, read back from the mailbox before its receipt came:
  // it is stored, so this is its receipt.
  std::optional<uint64_t> corr = requests_.AnswerSend(m->client_msg_id);
  if (!corr) return;
  Incoming in;
  in.kind = Incoming::Kind::kProcessed;
  in.request = *corr;
  in.processed.id = m->id;
  in.processed.client_msg_id = m->client_msg_id;
  in.processed.to = m->to;
  in.processed.ts = m->ts;
  in.processed.seq = event.seq;
  out->push_back(std::move(in));
}

void Client::SendAck() {
  const Seq last = mailbox_.last_seq();
  if (!session_ || last <= acks_.acked()) return;
  // Straight to the wire, outside the window: it has no answer (protocol
  // 2), and one lost is covered by the next.
  Header h;
  h.corr = next_corr_++;
  h.trace = options_.trace ? 1 : 0;
  Ack ack;
  ack.seq = last;
  Transmit(EncodeFrame(h, ack), false);
  acks_.Sent(last, Clock::now());
}

void Client::Tick(std::vector<Incoming>* out) {
  const auto now = Clock::now();
  for (const RequestQueue::Request& r : requests_.Tick(now))
    Failed(r, NoAnswer(), out);
  CheckServer(out);
  if (!session_) return;
  Renew();
  if (!mailbox_.synced()) return;
  if (std::optional<Sync> sync = mailbox_.Tick(now)) Ask(*sync);
  if (acks_.Due(mailbox_.last_seq(), now)) SendAck();
  if (now - last_sent_ >= std::chrono::milliseconds(options_.ping_ms)) {
    Ask(Ping());
  }
}

void Client::Poll(int timeout_ms, std::vector<Incoming>* out,
                  size_t max_events) {
  size_t before = out->size();
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  // At least one pass over the socket, even with a timeout of 0.
  for (bool read = false;; read = true) {
    Tick(out);
    HandOut(out, max_events);
    auto now = Clock::now();
    if (out->size() > before || (read && now >= deadline)) return;
    // Past the deadline (a timeout of 0), no poll: a receive that finds
    // nothing looks for what has come all the same, and a busy caller
    // (natter-bench) would pay a system call per client per pass.
    if (now < deadline) {
      std::vector<zmq::pollitem_t> items = {
          {socket_.handle(), 0, ZMQ_POLLIN, 0}};
      if (handshake_) items.push_back({handshake_.handle(), 0, ZMQ_POLLIN, 0});
      auto wait =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      natter::Poll(items, std::min<long>(wait.count() + 1, 50));
    }
    zmq::message_t msg;
    for (int n = 0; n < 1024 && socket_.recv(msg, zmq::recv_flags::dontwait);
         ++n) {
      Handle(msg, out);
    }
    // The monitor: a refusal (busy) for every client, the connection's
    // life with watch_link.
    if (handshake_) WatchLink(out);
    requests_.Pump(Clock::now());
  }
}

Status Client::Flush() {
  auto deadline = Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
  std::vector<Incoming> ignored;
  // Between frontds (a move under way): the session first.  Events that
  // come meanwhile wait in order; none is handed out, so none is acked.
  while (!session_ && user_.value != 0 && Clock::now() < deadline) {
    std::vector<zmq::pollitem_t> items = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    natter::Poll(items, 50);
    zmq::message_t msg;
    while (socket_.recv(msg, zmq::recv_flags::dontwait)) Handle(msg, &ignored);
    if (handshake_) WatchLink(&ignored);
    CheckServer(&ignored);
    requests_.ResendIfDue(hello_corr_, Clock::now());
    requests_.Pump(Clock::now());
  }
  if (!session_) {
    SaveCursor();
    return Status(ErrorCode::kNoSession, "not connected");
  }
  SendAck();
  // An ack has no answer; a sync sent after it does, with the cursor the
  // shard has then (it takes a device's requests in order).
  uint64_t asked = 0;
  while (acks_.confirmed() < acks_.acked()) {
    auto now = Clock::now();
    if (now >= deadline) {
      return Status(ErrorCode::kUnavailable,
                    "the acknowledgement was not confirmed within " +
                        std::to_string(options_.timeout_ms / 1000) + "s");
    }
    if (!requests_.Has(asked)) {
      if (asked != 0) {
        acks_.Lost();  // answered, and the cursor is short: ack again
        SendAck();
      }
      asked = GetMailbox(mailbox_.last_seq(), 1);
    }
    std::vector<zmq::pollitem_t> items = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    natter::Poll(items, 50);
    zmq::message_t msg;
    while (socket_.recv(msg, zmq::recv_flags::dontwait)) Handle(msg, &ignored);
    requests_.Pump(Clock::now());
  }
  SaveCursor();
  return Status::Ok();
}

std::string Client::StatePath(const char* suffix) const {
  return options_.state_dir + "/" + std::to_string(user_.value) + "." +
         device_ + suffix;
}

void Client::SaveCursor() {
  if (options_.state_dir.empty() || user_.value == 0) return;
  MakeDirs(options_.state_dir);
  std::string path = StatePath(".cursor");
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << mailbox_.last_seq().value << "\n";
    if (!out) return;
  }
  std::rename(tmp.c_str(), path.c_str());
}

Seq Client::LoadCursor() const {
  if (options_.state_dir.empty() || user_.value == 0) return Seq();
  std::string line;
  if (!ReadFirstLine(StatePath(".cursor"), &line)) return Seq();
  auto v = ParseUint(line);
  return v ? Seq(*v) : Seq();
}

}  // namespace natter
