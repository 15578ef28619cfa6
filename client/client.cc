#include "client/client.h"

#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>

#include "common/ids.h"
#include "common/net.h"
#include "common/text.h"
#include "common/token.h"

namespace natter {
namespace {

constexpr uint32_t kSyncPage = 500;
// Acknowledgements: at once after a message from someone else (its sender
// waits for "delivered"; then at most one each kAckDelayMs), lazily after
// anything else (receipts, copies of our own sends), so that those ride
// along with the next.
constexpr int kAckDelayMs = 50;
constexpr int kLazyAckMs = 1000;
constexpr int kSettleMs = 500;
// With a token source, a fresh token is asked for this long before the
// session's expires (frontd ends the session kTokenClockSkew after it), and
// at most this often while it does not come.
constexpr uint64_t kRenewAheadS = 30;
constexpr int kRenewEveryMs = 5000;

// Requests the application waits on (the library's own — sync, ack, ping —
// are handled inside; a hello's refusal is handed out too).
bool Answered(MsgType type) {
  return type != MsgType::kSync && type != MsgType::kAck && type != MsgType::kPing;
}

// An error frontd sends unasked (corr 0) that ends the session.
bool EndsSession(ErrorCode code) {
  return code == ErrorCode::kTokenExpired || code == ErrorCode::kTokenUnknownKey ||
         code == ErrorCode::kTokenMalformed || code == ErrorCode::kTokenBadSignature;
}

uint64_t NowSeconds() { return NowMs() / 1000; }

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
    : options_(std::move(options)), ctx_(ctx) {
  if (sodium_init() < 0) throw std::runtime_error("libsodium failed to start");
  if (ctx_ == nullptr) {
    own_ctx_ = std::make_unique<zmq::context_t>(1);
    ctx_ = own_ctx_.get();
  }
  device_ = options_.device;
  write_window_ = options_.max_in_flight;
  rng_.seed(randombytes_random());
  OpenSocket();
}

Client::~Client() = default;

Client::Clock::duration Client::Jittered(int ms) {
  // Between 3/4 and 5/4 of ms.
  std::uniform_int_distribution<int> spread(0, std::max(ms / 2, 1));
  return std::chrono::milliseconds(ms - ms / 4 + spread(rng_));
}

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
  if (!options_.server_key.empty()) {
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
    SetServerKey();
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
  socket_.connect(options_.server);
}

void Client::SetServerKey() {
  // 40 characters of Z85, or 64 hex digits: Z85 may hold '#', which
  // config files read as a comment, so natterctl writes hex.
  const std::string& key = options_.server_key;
  if (key.size() == 64) {
    uint8_t raw[32];
    size_t len = 0;
    if (sodium_hex2bin(raw, sizeof raw, key.data(), key.size(), nullptr, &len,
                       nullptr) != 0 || len != 32) {
      throw std::invalid_argument("the server key is not 64 hex digits");
    }
    socket_.set(zmq::sockopt::curve_serverkey, zmq::const_buffer(raw, sizeof raw));
    return;
  }
  if (key.size() != 40) {
    throw std::invalid_argument(
        "the server key is neither 64 hex digits nor 40 characters of Z85");
  }
  socket_.set(zmq::sockopt::curve_serverkey, key);
}

template <typename T>
uint64_t Client::Ask(const T& body, const std::string& cmid) {
  const MsgType type = FrameOf<T>::kType;
  Header h;
  h.corr = next_corr_++;
  h.trace = options_.trace ? 1 : 0;
  PendingRequest p;
  p.type = type;
  p.app = Answered(type);
  p.frame = EncodeFrame(h, body);
  p.client_msg_id = cmid;
  p.sent = Clock::now();
  p.deadline = p.sent + std::chrono::milliseconds(options_.timeout_ms);
  p.retry_at = p.sent + Jittered(options_.retry_ms);
  if (type == MsgType::kHello) {
    Transmit(p.frame);
    Due(p);
  }
  pending_[h.corr] = std::move(p);
  if (type != MsgType::kHello) {
    (IsWrite(type) ? queued_writes_ : queued_).push_back(h.corr);
    Pump();
  }
  return h.corr;
}

void Client::Pump() {
  if (!session_) return;
  bool writes_open = Clock::now() >= writes_held_until_;
  while (launched_ < options_.max_in_flight) {
    // The older of the next read and the next write, if the write may go.
    bool write = writes_open && !queued_writes_.empty() && writes_launched_ < write_window_;
    if (!write && queued_.empty()) break;
    write = write && (queued_.empty() || queued_writes_.front() < queued_.front());
    std::deque<uint64_t>& queue = write ? queued_writes_ : queued_;
    auto it = pending_.find(queue.front());
    queue.pop_front();
    if (it == pending_.end()) continue;
    PendingRequest& p = it->second;
    p.launched = true;
    ++launched_;
    if (write) ++writes_launched_;
    p.sent = Clock::now();
    p.deadline = p.sent + std::chrono::milliseconds(options_.timeout_ms);
    p.retry_at = p.sent + Jittered(options_.retry_ms);
    Due(p);
    Transmit(p.frame);
  }
}

std::map<uint64_t, Client::PendingRequest>::iterator Client::Finish(
    std::map<uint64_t, PendingRequest>::iterator it) {
  if (it->second.launched) {
    --launched_;
    if (IsWrite(it->second.type)) --writes_launched_;
  }
  if (it->second.type == MsgType::kSend) pending_sends_.erase(it->second.client_msg_id);
  return pending_.erase(it);
}

void Client::HoldWrite(std::map<uint64_t, PendingRequest>::iterator it) {
  PendingRequest& p = it->second;
  p.launched = false;
  --launched_;
  --writes_launched_;
  queued_writes_.insert(
      std::lower_bound(queued_writes_.begin(), queued_writes_.end(), it->first), it->first);
  write_window_ = 1;
  // The refusals of the writes that were on the wire together come
  // together: the first one sets the hold.
  auto now = Clock::now();
  if (now >= writes_held_until_) {
    write_backoff_ms_ =
        std::min(options_.retry_ms, write_backoff_ms_ == 0 ? 50 : write_backoff_ms_ * 2);
    writes_held_until_ = now + Jittered(write_backoff_ms_);
  }
}

void Client::WritePassed() {
  write_backoff_ms_ = 0;
  if (write_window_ < options_.max_in_flight) ++write_window_;
}

void Client::Transmit(const std::string& frame) {
  Parts parts;
  parts.push_back(ToMessage(frame));
  SendParts(socket_, parts);  // if it would block, the retry sends it
  last_sent_ = Clock::now();
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
      return Status(ErrorCode::kUnavailable,
                    "no answer from " + options_.server + " within " +
                        std::to_string(options_.timeout_ms / 1000) + "s");
    }
    std::vector<zmq::pollitem_t> items = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    if (handshake_) items.push_back({handshake_.handle(), 0, ZMQ_POLLIN, 0});
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    natter::Poll(items, std::min<long>(wait.count(), 200));
    Status refused = HandshakeRefusal();
    if (!refused.ok()) {
      StopHandshakeWatch();
      return refused;
    }
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
    auto it = pending_.find(hello_corr_);
    if (it != pending_.end() &&
        Clock::now() >= it->second.retry_at) {
      Transmit(it->second.frame);
      it->second.sent = Clock::now();
      it->second.retry_at = it->second.sent + Jittered(options_.retry_ms);
      Due(it->second);
    }
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
                  options_.server +
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
  pending_sends_[client_msg_id] = Ask(send, client_msg_id);
  ++sends_in_flight_;
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

uint64_t Client::GetHistory(const History& query) {
  return Ask(query);
}

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
  uint64_t corr = Ask(sync);
  pending_[corr].app = true;
  return corr;
}

void Client::AskSync(bool from_cursor, Seq after) {
  if (sync_in_flight_) return;
  Sync sync;
  sync.from_cursor = from_cursor;
  sync.after = std::max(after, last_seq_);
  sync.limit = kSyncPage;
  Ask(sync);
  sync_in_flight_ = true;
  last_sync_ = Clock::now();
}

void Client::Handle(const zmq::message_t& msg, std::vector<Incoming>* out) {
  Frame f;
  if (!DecodeFrame(msg.data(), msg.size(), &f).ok()) return;
  heard_since_down_ = true;
  if (f.type() == MsgType::kEvent) {
    Event ev;
    if (options_.receive && DecodeBody(f, &ev).ok() && ev.user == user_) {
      HandleEvent(ev, false);
    }
    return;
  }
  if (f.header.corr == 0) {
    // Unasked: only an error about the session's token means anything.
    Error e;
    if (f.type() == MsgType::kError && DecodeBody(f, &e).ok() &&
        EndsSession(e.code)) {
      SessionEnded(Status(e.code, e.message), out);
    }
    return;
  }
  auto it = pending_.find(f.header.corr);
  if (it == pending_.end()) return;  // an answer to a retry already answered
  PendingRequest& req = it->second;
  if (IsWrite(req.type) && f.type() != MsgType::kError) WritePassed();
  if (req.answered && f.type() != MsgType::kError) {
    Finish(it);  // its answer was handed out already; its place is freed now
    return;
  }
  switch (f.type()) {
    case MsgType::kWelcome: {
      Welcome w;
      if (!DecodeBody(f, &w).ok()) return;
      Finish(it);
      bool again = user_.value != 0;
      if (again && w.user != user_) {
        // A token source that gave another user's token: this client's
        // mailbox and cursor are not that user's.
        session_ = false;
        Incoming in;
        in.kind = Incoming::Kind::kError;
        in.error = Status(ErrorCode::kForbidden,
                          "the fresh token is for user " + std::to_string(w.user.value) +
                              ", not " + std::to_string(user_.value));
        out->push_back(std::move(in));
        return;
      }
      options_.token = hello_token_;
      expires_ = w.expires;
      // A fresh token for a session that goes on: nothing else changes.
      if (session_) return;
      user_ = w.user;
      device_ = w.device;
      session_ = true;
      connected_at_ = Clock::now();
      for (auto& [corr, p] : pending_) {
        if (!p.launched) continue;
        Transmit(p.frame);
        p.sent = Clock::now();
        p.retry_at = p.sent + Jittered(options_.retry_ms);
        Due(p);
      }
      Pump();
      // First time: catch up from the cursor.  Again: repair whatever the
      // live path lost while the session was gone, now and once the new
      // session's subscription has surely reached notifyd.
      if (!options_.receive) return;
      if (!again) {
        AskSync(true, Seq());
      } else if (synced_) {
        AskSync(false, last_seq_);
        settled_ = false;
      }
      return;
    }
    case MsgType::kProcessed: {
      Processed p;
      if (!DecodeBody(f, &p).ok()) return;
      Finish(it);
      if (sends_in_flight_ > 0) --sends_in_flight_;
      if (options_.receive && (!synced_ || p.seq > last_seq_)) {
        own_.insert(p.seq.value);
      }
      Incoming in;
      in.kind = Incoming::Kind::kProcessed;
      in.request = f.header.corr;
      // Shown only to a client that asked for traces.
      in.trace = options_.trace ? f.header.trace & ~(1ULL << 63) : 0;
      in.processed = std::move(p);
      out->push_back(std::move(in));
      return;
    }
    case MsgType::kOk:
    case MsgType::kHistoryReply:
    case MsgType::kChatsReply: {
      Incoming in;
      in.request = f.header.corr;
      if (f.type() == MsgType::kOk) {
        in.kind = Incoming::Kind::kOk;
        Done done;
        if (DecodeBody(f, &done).ok() && done.seq.value != 0 && options_.receive &&
            (!synced_ || done.seq > last_seq_)) {
          own_.insert(done.seq.value);  // our own change: not handed out
        }
      } else if (f.type() == MsgType::kHistoryReply) {
        in.kind = Incoming::Kind::kHistory;
        if (!DecodeBody(f, &in.history).ok()) return;
      } else {
        in.kind = Incoming::Kind::kChats;
        if (!DecodeBody(f, &in.chats).ok()) return;
      }
      Finish(it);
      out->push_back(std::move(in));
      return;
    }
    case MsgType::kSyncReply: {
      SyncReply reply;
      if (!DecodeBody(f, &reply).ok()) return;
      if (req.app) {
        Incoming in;
        in.kind = Incoming::Kind::kMailbox;
        in.request = f.header.corr;
        in.mailbox = std::move(reply);
        Finish(it);
        out->push_back(std::move(in));
        return;
      }
      Finish(it);
      sync_in_flight_ = false;
      HandleSyncReply(reply);
      return;
    }
    case MsgType::kAckReply: {
      AckReply reply;
      if (DecodeBody(f, &reply).ok() && reply.cursor > confirmed_) {
        confirmed_ = reply.cursor;
      }
      Finish(it);
      return;
    }
    case MsgType::kPong:
      Finish(it);
      return;
    case MsgType::kError: {
      Error e;
      if (!DecodeBody(f, &e).ok()) return;
      Status status(e.code, e.message);
      if (status.code() == ErrorCode::kNoSession) {
        // The server forgot us: hello again; this request waits for it.
        session_ = false;
        if (!pending_.count(hello_corr_)) SayHello(options_.token);
        return;
      }
      if (req.answered && !IsRetryable(status.code())) {
        Finish(it);
        return;
      }
      // An answer to an earlier copy of a write held back (below): it goes
      // again anyway.
      if (IsWrite(req.type) && !req.launched) return;
      if (status.code() == ErrorCode::kBusy && IsWrite(req.type)) {
        if (req.answered) {
          Finish(it);
        } else {
          HoldWrite(it);
        }
        return;
      }
      if (IsRetryable(status.code()) && Clock::now() < req.deadline) {
        // Sent again soon, then less and less often, up to retry_ms.
        req.backoff_ms = std::min(options_.retry_ms,
                                  req.backoff_ms == 0 ? 50 : req.backoff_ms * 2);
        req.retry_at = Clock::now() + Jittered(req.backoff_ms);
        Due(req);
        return;
      }
      MsgType type = req.type;
      bool app = req.app;
      std::string cmid = req.client_msg_id;
      Finish(it);
      if (type == MsgType::kSync && !app) sync_in_flight_ = false;
      if (type == MsgType::kSend && sends_in_flight_ > 0) --sends_in_flight_;
      if (app) {
        Incoming in;
        in.kind = Incoming::Kind::kError;
        in.request = type == MsgType::kHello ? 0 : f.header.corr;
        in.error = status;
        in.client_msg_id = cmid;
        out->push_back(std::move(in));
      }
      return;
    }
    default:
      return;
  }
}

void Client::SessionEnded(const Status& why, std::vector<Incoming>* out) {
  session_ = false;
  // A hello with a fresh token already on its way makes a new session.
  if (pending_.count(hello_corr_)) return;
  Status s = why;
  if (options_.token_source) {
    std::string token;
    Status fresh = options_.token_source(&token);
    if (fresh.ok()) {
      SayHello(token);
      return;
    }
    s = Status(why.code(), why.message() + "; no fresh token: " + fresh.message());
  }
  Incoming in;
  in.kind = Incoming::Kind::kError;
  in.error = s;
  out->push_back(std::move(in));
}

void Client::Renew() {
  auto now = Clock::now();
  if (!options_.token_source || expires_ == 0 || now < next_renew_ ||
      NowSeconds() + kRenewAheadS < expires_ || pending_.count(hello_corr_)) {
    return;
  }
  next_renew_ = now + std::chrono::milliseconds(kRenewEveryMs);
  // Not yet fresh (the file not yet rewritten, say): asked again later;
  // if none comes, the session's end says why.
  std::string token;
  if (options_.token_source(&token).ok() && token != options_.token) SayHello(token);
}

void Client::HandleEvent(const Event& event, bool from_sync) {
  if (synced_ && event.seq <= last_seq_) return;  // a duplicate
  buffer_.emplace(event.seq.value,
                  std::make_pair(event, from_sync && catching_up_));
}

void Client::HandleSyncReply(const SyncReply& reply) {
  if (!synced_) {
    // Start after the shard's cursor, or after what this device already
    // handed out if its acknowledgement did not reach the shard.
    Seq base = reply.cursor;
    Seq local = LoadCursor();
    if (local > base && local <= reply.head) base = local;
    last_seq_ = base;
    acked_ = confirmed_ = reply.cursor;
    synced_ = true;
    buffer_.erase(buffer_.begin(), buffer_.upper_bound(base.value));
    own_.erase(own_.begin(), own_.upper_bound(base.value));
  }
  for (const Event& ev : reply.events) HandleEvent(ev, true);
  if (reply.more && !reply.events.empty()) {
    AskSync(false, reply.events.back().seq);
  } else {
    catching_up_ = false;
  }
}

void Client::HandOut(std::vector<Incoming>* out, size_t max_events) {
  if (!synced_) return;
  for (size_t given = 0; max_events == 0 || given < max_events;) {
    uint64_t next = last_seq_.value + 1;
    if (own_.erase(next)) {
      last_seq_ = Seq(next);
      NoteUnacked(false);
      continue;
    }
    auto it = buffer_.find(next);
    if (it == buffer_.end()) break;
    const Event& ev = it->second.first;
    const Message* m = ev.message();
    const bool mine = ev.origin_device == device_;
    auto own = m != nullptr && mine ? pending_sends_.find(m->client_msg_id)
                                    : pending_sends_.end();
    if (own != pending_sends_.end()) {
      // One of our sends, read back from the mailbox before its receipt
      // came: it is stored, so this is its receipt.
      const uint64_t corr = own->second;
      pending_sends_.erase(own);
      auto req = pending_.find(corr);
      if (req != pending_.end()) req->second.answered = true;
      Incoming in;
      in.kind = Incoming::Kind::kProcessed;
      in.request = corr;
      in.processed.id = m->id;
      in.processed.client_msg_id = m->client_msg_id;
      in.processed.to = m->to;
      in.processed.ts = m->ts;
      in.processed.seq = ev.seq;
      out->push_back(std::move(in));
      if (sends_in_flight_ > 0) --sends_in_flight_;
      buffer_.erase(it);
      last_seq_ = Seq(next);
      NoteUnacked(false);
      continue;
    }
    if (mine) {
      // This device's own send, reaction or seen mark: it had the answer.
      buffer_.erase(it);
      last_seq_ = Seq(next);
      NoteUnacked(false);
      continue;
    }
    NoteUnacked(m != nullptr && m->from != user_);
    Incoming in;
    in.kind = Incoming::Kind::kEvent;
    in.event = std::move(it->second.first);
    in.missed = it->second.second;
    out->push_back(std::move(in));
    buffer_.erase(it);
    last_seq_ = Seq(next);
    ++given;
  }
  // Our own receipts may name seqs below what a sync already handed out.
  own_.erase(own_.begin(), own_.upper_bound(last_seq_.value));
  bool gap = !buffer_.empty() || !own_.empty();
  if (gap && !gap_) gap_since_ = Clock::now();
  gap_ = gap;
}

void Client::SendAck() {
  if (last_seq_ <= acked_) return;
  Ack ack;
  ack.seq = last_seq_;
  ack_corr_ = Ask(ack);
  acked_ = last_seq_;
  last_ack_ = Clock::now();
  unacked_since_ = Clock::time_point{};
  urgent_ack_ = false;
}

void Client::NoteUnacked(bool urgent) {
  if (unacked_since_ == Clock::time_point{}) unacked_since_ = Clock::now();
  urgent_ack_ = urgent_ack_ || urgent;
}

void Client::Tick(std::vector<Incoming>* out) {
  auto now = Clock::now();
  // The scan of the requests on the wire only when one of them is due
  // (with hundreds in flight, a scan at every Poll was most of a busy
  // client's time).
  bool scan = now >= next_due_;
  if (scan) next_due_ = Clock::time_point::max();
  for (auto it = pending_.begin(); scan && it != pending_.end();) {
    PendingRequest& p = it->second;
    bool active = p.launched || p.type == MsgType::kHello;
    if (!active) {
      ++it;
      continue;
    }
    if (now >= p.deadline) {
      if (p.type == MsgType::kSync && !p.app) sync_in_flight_ = false;
      if (p.app && !p.answered) {
        if (p.type == MsgType::kSend && sends_in_flight_ > 0) --sends_in_flight_;
        Incoming in;
        in.kind = Incoming::Kind::kError;
        in.request = p.type == MsgType::kHello ? 0 : it->first;
        in.error = Status(ErrorCode::kUnavailable,
                          "no answer from " + options_.server + " within " +
                              std::to_string(options_.timeout_ms / 1000) + "s");
        in.client_msg_id = p.client_msg_id;
        out->push_back(std::move(in));
      }
      it = Finish(it);
      continue;
    }
    if ((session_ || p.type == MsgType::kHello) && now >= p.retry_at) {
      // Unanswered: again, less and less often (up to four times
      // retry_ms), with jitter, so that clients that lost the same daemon
      // do not all come back at once.
      Transmit(p.frame);
      p.sent = now;
      p.retries = std::min(p.retries + 1, 2);
      p.retry_at = now + Jittered(options_.retry_ms << p.retries);
    }
    Due(p);
    ++it;
  }
  if (!session_) return;
  Renew();
  if (!synced_) return;
  if (gap_ && now - gap_since_ >= std::chrono::milliseconds(options_.gap_grace_ms)) {
    AskSync(false, last_seq_);
    gap_since_ = now;
  }
  if (!settled_ && now - connected_at_ >= std::chrono::milliseconds(kSettleMs)) {
    // The subscription may reach notifyd after the first sync was read.
    AskSync(false, last_seq_);
    settled_ = true;
  }
  if (now - last_sync_ >= std::chrono::milliseconds(options_.resync_ms)) {
    AskSync(false, last_seq_);
  }
  // One acknowledgement on the wire at a time: under load they merge.
  bool ack_on_wire = ack_corr_ != 0 && pending_.count(ack_corr_) != 0;
  if (last_seq_ > acked_ && unacked_since_ == Clock::time_point{}) unacked_since_ = now;
  bool due = urgent_ack_ ? now - last_ack_ >= std::chrono::milliseconds(kAckDelayMs)
                         : now - unacked_since_ >= std::chrono::milliseconds(kLazyAckMs);
  if (last_seq_ > acked_ && !ack_on_wire && due) SendAck();
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
    std::vector<zmq::pollitem_t> items = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    if (handshake_) items.push_back({handshake_.handle(), 0, ZMQ_POLLIN, 0});
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    natter::Poll(items, now >= deadline ? 0 : std::min<long>(wait.count() + 1, 50));
    zmq::message_t msg;
    for (int n = 0; n < 1024 && socket_.recv(msg, zmq::recv_flags::dontwait); ++n) {
      Handle(msg, out);
    }
    if (options_.watch_link) WatchLink(out);
    Pump();
  }
}

Status Client::Flush() {
  if (!session_) return Status(ErrorCode::kNoSession, "not connected");
  SendAck();
  auto deadline = Clock::now() + std::chrono::milliseconds(options_.timeout_ms);
  std::vector<Incoming> ignored;
  while (confirmed_ < acked_) {
    auto now = Clock::now();
    if (now >= deadline) {
      return Status(ErrorCode::kUnavailable,
                    "the acknowledgement was not confirmed within " +
                        std::to_string(options_.timeout_ms / 1000) + "s");
    }
    std::vector<zmq::pollitem_t> items = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    natter::Poll(items, 50);
    zmq::message_t msg;
    while (socket_.recv(msg, zmq::recv_flags::dontwait)) Handle(msg, &ignored);
    Pump();
    if (!pending_.count(ack_corr_) && confirmed_ < acked_) {
      acked_ = confirmed_;  // the ack was lost or refused: ask again
      SendAck();
    }
    if (now - last_sent_ >= std::chrono::milliseconds(options_.retry_ms)) {
      auto it = pending_.find(ack_corr_);
      if (it != pending_.end()) Transmit(it->second.frame);
    }
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
    out << last_seq_.value << "\n";
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
