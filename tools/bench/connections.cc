// natter-bench connections: many clients connected at once, each sending a
// few messages slowly (or, with --total-rate, the whole crowd sending so
// many a second for --seconds).  The clients live in worker processes
// (each below its open-files limit), connecting over TCP from source
// addresses 127.0.0.2 and up so that ports never run out, each given every
// frontd of the cell (--frontds) and taking one at random.  The parent
// starts the cell and the workers, reads the frontds' memory idle and with
// every client connected, then lets the workers send, kills frontd-0 if
// asked (--kill-frontd), and adds up their reports.
//
// A worker tells the parent on a pipe (one JSON line after connecting, one
// at the end) and waits for a line on another pipe between the two: "go",
// the moment the sending starts and the moment of the kill (0: none), in
// nanoseconds of the monotonic clock, which every process here shares.
// Each message carries the moment it was sent (16 hex digits at the start
// of its text), so its recipient times send→delivered; a worker writes
// those times, and when each client of the killed frontd had a session
// again, into a file of its own that the parent reads at the end.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "common/daemon.h"
#include "tools/bench/bench.h"

namespace po = boost::program_options;

namespace natter {
namespace bench {
namespace {

struct ConnSettings {
  unsigned clients = 1000;
  unsigned messages = 20;
  double rate = 1;             // messages a second, each client
  double total_rate = 0;       // or: messages a second from all clients,
  double seconds = 0;          //     for so long
  double kill_frontd = -1;     // frontd-0 is killed this long into the sending
  double connect_rate = 2000;  // new clients a second, all workers
  unsigned workers = 0;        // 0: one per 2000 clients
  size_t text_bytes = 256;
  CellOptions cell;

  // How long the clients send.
  double SendingSeconds() const {
    return total_rate > 0 ? seconds : messages / rate;
  }
};

ConnSettings ParseConnections(const std::vector<std::string>& args) {
  ConnSettings st;
  po::options_description opts;
  opts.add_options()("clients", UintValue("clients", &st.clients))(
      "messages", UintValue("messages", &st.messages))(
      "rate", po::value(&st.rate))("total-rate", po::value(&st.total_rate))(
      "seconds", po::value(&st.seconds))(
      "kill-frontd", po::value(&st.kill_frontd))("connect-rate",
                                                 po::value(&st.connect_rate))(
      "workers", UintValue("workers", &st.workers))(
      "handshake-rate", UintValue("handshake-rate", &st.cell.handshake_rate))(
      "text-bytes", UintValue("text-bytes", &st.text_bytes));
  ParseMode("connections", args, opts, &st.cell);
  if (st.clients < 2 || st.rate <= 0 || st.connect_rate <= 0 ||
      st.total_rate < 0 || st.text_bytes < 16 ||
      st.text_bytes > kMaxTextBytes) {
    throw Exit{
        EX_USAGE,
        "connections: --clients >= 2, --rate and --connect-rate above 0, "
        "--text-bytes 16 to 4096"};
  }
  if ((st.total_rate > 0) != (st.seconds > 0)) {
    throw Exit{EX_USAGE, "connections: --total-rate and --seconds go together"};
  }
  if (st.kill_frontd >= 0 && st.cell.frontds < 2) {
    throw Exit{EX_USAGE,
               "connections: --kill-frontd needs --frontds 2 or more"};
  }
  if (st.workers == 0) st.workers = (st.clients + 1999) / 2000;
  return st;
}

// A port listened on and never accepted from: what was there is gone for
// its clients (they connect, and nothing answers).
class PortHold {
 public:
  // False when the port is taken (something listens there).
  bool Take(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    if (fd_ >= 0 &&
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
        ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::listen(fd_, 0) == 0) {
      return true;
    }
    Release();
    return false;
  }
  void Release() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  ~PortHold() { Release(); }

 private:
  int fd_ = -1;
};

int64_t MonotonicNs(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             t.time_since_epoch())
      .count();
}

Clock::time_point FromNs(int64_t ns) {
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::nanoseconds(ns)));
}

// A text of n bytes that starts with the moment it was sent.
std::string StampedText(Clock::time_point now, size_t n) {
  char stamp[17];
  std::snprintf(stamp, sizeof stamp, "%016" PRIx64,
                static_cast<uint64_t>(MonotonicNs(now)));
  std::string text(stamp, 16);
  text.resize(n, 'x');
  return text;
}

// The moment a stamped text was sent; -1 for another text.
int64_t StampOf(const std::string& text) {
  uint64_t v = 0;
  if (text.size() < 16) return -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + 16, v, 16);
  if (ec != std::errc() || end != text.data() + 16) return -1;
  return static_cast<int64_t>(v);
}

// Where a worker writes its times: a line "L sent_ns latency_ns quiet"
// for each message delivered (quiet: neither its sender nor its recipient
// was on the killed frontd), and "B back_ns frontd" for each client of the
// killed frontd (back_ns -1: it had no session again by the end).
std::string TimesFile(const std::string& dir, unsigned first) {
  return dir + "/times-" + std::to_string(first) + ".txt";
}

// ---- In a worker process ----

// One client of a worker and what it has seen.
struct Member {
  std::unique_ptr<Client> client;  // null: it did not connect
  unsigned planned = 0;            // sends it is to make
  unsigned sent = 0;
  void* watched = nullptr;  // the socket whose descriptor is watched
  // Through the kill: whether it was on the killed frontd, its moves then,
  // and when it had a session again (nanoseconds after the kill; -1: not
  // yet).
  bool on_killed = false;
  uint64_t moves_at_start = 0, moves_at_kill = 0;
  int64_t back_ns = -1;
  std::set<uint64_t> processed, delivered;  // message ids
  // After the run: the conversation with the partner as the shard has it
  // (to tell a message not yet seen live from one not stored).
  uint64_t history_request = 0;
  bool history_done = false, history_ok = false;
  std::set<uint64_t> in_history;
};

// A worker's clients: clients [first, first + n) of the run, as users
// 100000 + i, each sending to its partner i ^ 1 (in the same worker: the
// shares are even).  Looking at a client takes what it brought.
class Crowd {
 public:
  Crowd(unsigned first, unsigned n) : first_(first), members_(n) {
    ctx_.set(zmq::ctxopt::max_sockets, 65536);
  }

  zmq::context_t& ctx() { return ctx_; }
  unsigned first() const { return first_; }
  unsigned size() const { return static_cast<unsigned>(members_.size()); }
  Member& operator[](unsigned k) { return members_[k]; }
  const Member& operator[](unsigned k) const { return members_[k]; }
  UserId user(unsigned k) const { return UserId(100000 + first_ + k); }
  // The partner of client k, when it connected; else null.
  const Member* Partner(unsigned k) const {
    unsigned p = k ^ 1u;
    return p < size() && members_[p].client ? &members_[p] : nullptr;
  }
  // The clients that connected, in the order they did.
  const std::vector<unsigned>& connected() const { return connected_; }
  uint64_t refused() const { return refused_; }
  // Called with k when client k's socket is not the one watched (a new
  // connection: it moved to another frontd).
  void set_on_new_socket(std::function<void(unsigned)> f) {
    on_new_socket_ = std::move(f);
  }
  // Errors answered to requests.
  uint64_t errors() const { return errors_; }
  const std::string& last_error() const { return last_error_; }

  // The outcome of client k's Connect.
  void Connected(unsigned k, const Status& s) {
    if (s.ok()) {
      connected_.push_back(k);
      return;
    }
    ++refused_;
    last_error_ = s.ToString();
    members_[k].client.reset();
  }

  // While the others connect, the connected ones are looked after (pings,
  // the catch-up), n at each turn, as an application would.
  void KeepAlive(size_t n = 16) {
    for (size_t j = 0; j < n && !connected_.empty(); ++j) {
      idle_.clear();
      members_[connected_[keep_alive_++ % connected_.size()]].client->Poll(
          0, &idle_);
    }
  }

  void Look(unsigned k) {
    Member& m = members_[k];
    in_.clear();
    m.client->Poll(0, &in_);
    for (const Incoming& i : in_) Take(k, i);
    if (on_new_socket_ && m.client->PollItem().socket != m.watched)
      on_new_socket_(k);
    if (m.on_killed && m.back_ns < 0 &&
        m.client->server_moves() > m.moves_at_kill && m.client->InSession()) {
      m.back_ns = MonotonicNs(Clock::now()) - killed_ns_;
    }
  }

  // The sending starts: moves are counted from here.
  void Started() {
    for (unsigned k : connected_)
      members_[k].moves_at_start = members_[k].client->server_moves();
  }

  // frontd-`port` was killed at killed_ns: its clients are marked.
  void Killed(int64_t killed_ns, const std::string& port) {
    killed_ns_ = killed_ns;
    for (unsigned k : connected_) {
      Member& m = members_[k];
      const std::string& server = m.client->current_server();
      m.on_killed = server.size() > port.size() &&
                    server.compare(server.size() - port.size() - 1,
                                   std::string::npos, ":" + port) == 0;
      m.moves_at_kill = m.client->server_moves();
    }
  }

  // Every client of the killed frontd has a session again.
  bool AllBack() const {
    for (unsigned k : connected_) {
      if (members_[k].on_killed && members_[k].back_ns < 0) return false;
    }
    return true;
  }

  // The times file (see TimesFile); base_port: frontd-0's.
  void WriteTimes(const std::string& path, int base_port) const {
    std::ofstream out(path);
    for (const Delivery& d : deliveries_) {
      bool quiet = !members_[d.k].on_killed && !members_[d.k ^ 1u].on_killed;
      out << "L " << d.sent_ns << ' ' << d.latency_ns << ' ' << quiet << '\n';
    }
    for (unsigned k : connected_) {
      const Member& m = members_[k];
      if (!m.on_killed) continue;
      const std::string& server = m.client->current_server();
      int port = std::atoi(server.c_str() + server.rfind(':') + 1);
      out << "B " << m.back_ns << ' ' << port - base_port << '\n';
    }
    if (!out.flush()) throw Exit{EX_IOERR, path + ": cannot write"};
  }

 private:
  // A message delivered to client k, sent at sent_ns.
  struct Delivery {
    int64_t sent_ns, latency_ns;
    unsigned k;
  };

  void Take(unsigned k, const Incoming& i) {
    Member& m = members_[k];
    if (i.kind == Incoming::Kind::kProcessed)
      m.processed.insert(i.processed.id.value);
    if (i.kind == Incoming::Kind::kError) {
      ++errors_;
      if (last_error_.empty()) last_error_ = i.error.ToString();
    }
    // The partner's messages (a copy of one of our own sends, read back
    // after its answer timed out, is not a delivery).
    const Message* got =
        i.kind == Incoming::Kind::kEvent ? i.event.message() : nullptr;
    if (got != nullptr && got->from != m.client->user() &&
        m.delivered.insert(got->id.value).second) {
      int64_t sent = StampOf(got->text);
      if (sent >= 0) {
        deliveries_.push_back({sent, MonotonicNs(Clock::now()) - sent, k});
      }
    }
    if (i.kind == Incoming::Kind::kHistory && i.request == m.history_request) {
      for (const auto& item : i.history.messages)
        m.in_history.insert(item.message.id.value);
      m.history_done = m.history_ok = true;
    }
    if (i.kind == Incoming::Kind::kError && i.request == m.history_request)
      m.history_done = true;
  }

  zmq::context_t ctx_{1};
  unsigned first_;
  std::vector<Member> members_;
  std::vector<unsigned> connected_;
  uint64_t refused_ = 0, errors_ = 0;
  std::string last_error_;
  std::vector<Incoming> in_, idle_;
  size_t keep_alive_ = 0;
  std::function<void(unsigned)> on_new_socket_;
  int64_t killed_ns_ = 0;
  std::vector<Delivery> deliveries_;
};

// Connects a crowd's clients one by one at the worker's share of
// --connect-rate, each from a source address of its own.
class Dialer {
 public:
  Dialer(const LocalCell& cell, const ConnSettings& st, int port, Crowd* crowd)
      : cell_(cell),
        frontds_(st.cell.frontds),
        port_(port),
        crowd_(crowd),
        pace_(Seconds(std::max(1u, st.workers) / st.connect_rate)) {}

  // Returns the seconds it took.  A client refused busy by every frontd
  // (their handshake-rate) tries again after the others, as a real one
  // would later, up to five rounds a second apart.
  double Run() {
    auto start = Clock::now(), next = start;
    std::vector<unsigned> todo(crowd_->size());
    for (unsigned k = 0; k < todo.size(); ++k) todo[k] = k;
    for (int round = 0; round < 6 && !todo.empty(); ++round) {
      if (round > 0) std::this_thread::sleep_for(std::chrono::seconds(1));
      std::vector<unsigned> busy;
      for (unsigned k : todo) {
        crowd_->KeepAlive();
        std::this_thread::sleep_until(next);
        next = std::max(next + pace_, Clock::now());
        Member& m = (*crowd_)[k];
        m.client = std::make_unique<Client>(OptionsFor(crowd_->first() + k),
                                            &crowd_->ctx());
        Status s = m.client->Connect();
        if (s.code() == ErrorCode::kBusy && round < 5) {
          busy.push_back(k);
          m.client.reset();
          continue;
        }
        crowd_->Connected(k, s);
      }
      todo = std::move(busy);
    }
    return SecondsSince(start);
  }

 private:
  ClientOptions OptionsFor(unsigned i) const {
    ClientOptions o = cell_.Options(100000 + i, "bench");
    // Every frontd, from a source address of the client's own.
    o.server.clear();
    for (unsigned f = 0; f < frontds_; ++f) {
      if (f > 0) o.server += ",";
      o.server += "tcp://127.0.0." + std::to_string(2 + i % 250) +
                  ":0;127.0.0.1:" + std::to_string(port_ + f);
    }
    o.state_dir.clear();
    o.timeout_ms = 60000;
    o.resync_ms = 60000;
    return o;
  }

  const LocalCell& cell_;
  unsigned frontds_;
  int port_;
  Crowd* crowd_;
  Clock::duration pace_;
};

// The clients' ZMQ_FDs in an epoll set: the worker sleeps there and looks
// at a client when its descriptor says something came.  A pass over
// thousands of clients every few ms would take the CPU from the cell.  A
// client that moves to another frontd has a new socket: the crowd says so,
// and its descriptor is watched (the old one left the set when it closed).
class Readiness {
 public:
  explicit Readiness(Crowd* crowd)
      : crowd_(crowd), ep_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (ep_ < 0) throw Exit{EX_OSERR, "epoll_create1 failed"};
    for (unsigned k : crowd->connected()) Watch(k);
    crowd->set_on_new_socket([this](unsigned k) { Watch(k); });
  }
  ~Readiness() {
    crowd_->set_on_new_socket({});
    ::close(ep_);
  }
  Readiness(const Readiness&) = delete;
  Readiness& operator=(const Readiness&) = delete;

  // Waits at most ms; hands each client whose descriptor woke to `ready`.
  void Wait(long ms, const std::function<void(unsigned)>& ready = {}) {
    int got =
        ::epoll_wait(ep_, events_.data(), static_cast<int>(events_.size()),
                     static_cast<int>(ms));
    for (int j = 0; j < got && ready; ++j) ready(events_[j].data.u32);
  }

 private:
  void Watch(unsigned k) {
    Member& m = (*crowd_)[k];
    zmq::pollitem_t item = m.client->PollItem();
    int fd = -1;
    size_t len = sizeof fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = k;
    if (zmq_getsockopt(item.socket, ZMQ_FD, &fd, &len) != 0) {
      throw Exit{EX_OSERR, "cannot watch a client's socket"};
    }
    // The number of a descriptor closed meanwhile may be the new one's.
    if (::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0 &&
        (errno != EEXIST || ::epoll_ctl(ep_, EPOLL_CTL_MOD, fd, &ev) != 0)) {
      throw Exit{EX_OSERR, "cannot watch a client's socket"};
    }
    m.watched = item.socket;
  }

  Crowd* crowd_;
  int ep_;
  std::vector<epoll_event> events_ = std::vector<epoll_event>(1024);
};

// The sending time: each client sends --messages at --rate to its partner,
// starting at a random moment of its first interval so the load is spread
// (or: --total-rate × --seconds sends, the worker's share of them, each at
// a random moment from a random client), until every answer and every
// delivery has come and every client of a killed frontd has a session
// again (at most the sending time and 120 s more).  A client is looked at
// when its descriptor wakes, when it is due to send, and (for the client
// library's timers: acknowledgements, pings, retries, moves) in a sweep
// over an eighth of them every 250 ms.
class SendPhase {
 public:
  // start: when the sending starts; killed: when frontd-0 (at
  // kill_port) is killed, or the epoch for no kill.
  SendPhase(const ConnSettings& st, Crowd* crowd, Readiness* readiness,
            Clock::time_point start, Clock::time_point killed,
            std::string kill_port)
      : st_(st),
        crowd_(crowd),
        readiness_(readiness),
        start_(start),
        killed_(killed),
        kill_port_(std::move(kill_port)) {}

  // Returns the seconds it took.
  double Run() {
    Schedule();
    crowd_->Started();
    auto end = std::max(start_ + Seconds(st_.SendingSeconds()), killed_);
    auto deadline = end + std::chrono::seconds(120);
    // Until the sending starts, the clients are looked after as during it.
    next_sweep_ = Clock::now();
    for (auto now = next_sweep_; now < start_; now = Clock::now()) {
      if (now >= next_sweep_) Sweep(now);
      Sleep();
    }
    while (Clock::now() < deadline) {
      auto now = Clock::now();
      if (!kill_seen_ && killed_ != Clock::time_point() && now >= killed_) {
        crowd_->Killed(MonotonicNs(killed_), kill_port_);
        kill_seen_ = true;
      }
      SendDue(now);
      if (now >= next_sweep_ && Sweep(now)) break;
      Sleep();
    }
    return SecondsSince(start_);
  }

 private:
  // Each send's moment, in the order they are due (only clients whose
  // partner is in this worker send).
  void Schedule() {
    std::minstd_rand rng(crowd_->first() + 1);
    std::vector<unsigned> senders;
    for (unsigned k : crowd_->connected()) {
      if ((k ^ 1u) < crowd_->size()) senders.push_back(k);
    }
    if (senders.empty()) return;
    auto at = [&](double s) { return start_ + Seconds(s); };
    if (st_.total_rate > 0) {
      // The worker's share of the crowd's sends.
      double share = st_.total_rate * st_.seconds * crowd_->size() /
                     static_cast<double>(st_.clients);
      auto n = static_cast<uint64_t>(share + 0.5);
      std::uniform_real_distribution<double> when(0, st_.seconds);
      for (uint64_t j = 0; j < n; ++j) {
        unsigned k = senders[rng() % senders.size()];
        ++(*crowd_)[k].planned;
        due_.emplace(at(when(rng)), k);
      }
      return;
    }
    double gap = 1.0 / st_.rate;
    for (unsigned k : senders) {
      double first = gap * (static_cast<double>(rng() % 1000) / 1000.0);
      (*crowd_)[k].planned = st_.messages;
      for (unsigned j = 0; j < st_.messages; ++j)
        due_.emplace(at(first + j * gap), k);
    }
  }

  void SendDue(Clock::time_point now) {
    while (!due_.empty() && due_.begin()->first <= now) {
      unsigned k = due_.begin()->second;
      due_.erase(due_.begin());
      Member& m = (*crowd_)[k];
      m.client->Send(crowd_->user(k ^ 1u),
                     StampedText(Clock::now(), st_.text_bytes));
      ++m.sent;
      crowd_->Look(k);
    }
  }

  // An eighth of the clients each time: each is looked at every two
  // seconds (often enough for the library's timers: pings every 10 s, a
  // silent frontd left after 4, retries after 2), a third of the CPU of
  // looking at each every second with 64,000 clients.  True when all is
  // done.
  bool Sweep(Clock::time_point now) {
    const std::vector<unsigned>& connected = crowd_->connected();
    for (size_t j = 0; j < (connected.size() + 7) / 8; ++j) {
      crowd_->Look(connected[sweep_at_++ % connected.size()]);
    }
    next_sweep_ = now + std::chrono::milliseconds(250);
    return AllDone(now);
  }

  // Every message sent and answered, every partner's delivered, and the
  // clients of a killed frontd back.
  bool AllDone(Clock::time_point now) const {
    if (!due_.empty()) return false;
    if (killed_ != Clock::time_point() && (now < killed_ || !crowd_->AllBack()))
      return false;
    for (unsigned k : crowd_->connected()) {
      const Member& m = (*crowd_)[k];
      if (m.client->SendsInFlight() > 0) return false;
      const Member* partner = crowd_->Partner(k);
      if (partner != nullptr && m.delivered.size() < partner->planned)
        return false;
    }
    return true;
  }

  // Until the next sweep or the next send, whichever is first.
  void Sleep() {
    auto wake =
        std::min(next_sweep_, due_.empty() ? next_sweep_ : due_.begin()->first);
    long ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  wake - Clock::now())
                  .count();
    readiness_->Wait(std::clamp(ms, 0L, 250L),
                     [this](unsigned k) { crowd_->Look(k); });
  }

  const ConnSettings& st_;
  Crowd* crowd_;
  Readiness* readiness_;
  Clock::time_point start_, killed_;
  std::string kill_port_;
  bool kill_seen_ = false;
  std::multimap<Clock::time_point, unsigned> due_;
  Clock::time_point next_sweep_;
  size_t sweep_at_ = 0;
};

// After the sending time, a processed message its partner has not seen
// live: is it in the partner's conversation on its shard?  Yes: late (the
// device would get it from its mailbox); no: lost.  Unchecked when the
// history does not come within two minutes.
class Audit {
 public:
  Audit(Crowd* crowd, Readiness* readiness)
      : crowd_(crowd), readiness_(readiness) {}

  void Run() {
    Ask();
    Wait();
  }

  // sent, processed, delivered, lost, late and unchecked, over the crowd.
  nlohmann::json Tally() const {
    uint64_t planned = 0, sent = 0, processed = 0, delivered = 0, lost = 0,
             late = 0, unchecked = 0;
    for (unsigned k : crowd_->connected()) {
      const Member& m = (*crowd_)[k];
      planned += m.planned;
      sent += m.sent;
      processed += m.processed.size();
      delivered += m.delivered.size();
      const Member* partner = crowd_->Partner(k);
      if (partner == nullptr) continue;
      for (uint64_t id : m.processed) {
        if (partner->delivered.count(id)) continue;
        if (!partner->history_ok) {
          ++unchecked;  // the history did not come in time
        } else if (partner->in_history.count(id)) {
          ++late;
        } else {
          ++lost;
        }
      }
    }
    uint64_t moves_killed = 0, moves_others = 0;
    for (unsigned k : crowd_->connected()) {
      const Member& m = (*crowd_)[k];
      (m.on_killed ? moves_killed : moves_others) +=
          m.client->server_moves() - m.moves_at_start;
    }
    return {{"moves_killed", moves_killed},
            {"moves_others", moves_others},
            {"planned", planned},
            {"sent", sent},
            {"processed", processed},
            {"delivered", delivered},
            {"lost", lost},
            {"late", late},
            {"unchecked", unchecked}};
  }

 private:
  // The history of each partner that misses one of k's messages.
  void Ask() {
    for (unsigned k : crowd_->connected()) {
      const Member* partner = crowd_->Partner(k);
      if (partner == nullptr || !Missing((*crowd_)[k], *partner)) continue;
      History q;
      q.peer = crowd_->user(k);
      q.mode = HistoryMode::kAfter;
      q.limit = kMaxHistoryPage;  // 2 × --messages of them at most
      Member& p = (*crowd_)[k ^ 1u];
      p.history_request = p.client->GetHistory(q);
      asking_.push_back(k ^ 1u);
    }
  }

  static bool Missing(const Member& m, const Member& partner) {
    for (uint64_t id : m.processed) {
      if (!partner.delivered.count(id)) return true;
    }
    return false;
  }

  // The cell may still be working through a backlog: up to 2 minutes.
  void Wait() {
    for (auto until = Clock::now() + std::chrono::seconds(120);
         Clock::now() < until;) {
      bool all = true;
      for (unsigned p : asking_) {
        if (!(*crowd_)[p].history_done) {
          crowd_->Look(p);
          all = all && (*crowd_)[p].history_done;
        }
      }
      if (all) break;
      readiness_->Wait(20);
    }
  }

  Crowd* crowd_;
  Readiness* readiness_;
  std::vector<unsigned> asking_;
};

// One worker process: clients [first, first + n) through the phases.
class ConnectionsWorker {
 public:
  ConnectionsWorker(const LocalCell& cell, const ConnSettings& st, int port,
                    std::string times, unsigned first, unsigned n)
      : cell_(cell),
        st_(st),
        port_(port),
        times_(std::move(times)),
        crowd_(first, n) {}

  // Tells the parent on `report`, waits for its word on `go`; returns the
  // process's exit code.
  int Run(int report, int go) {
    double connect_s = Dialer(cell_, st_, port_, &crowd_).Run();
    WriteLine(report, {{"connected", crowd_.connected().size()},
                       {"refused", crowd_.refused()},
                       {"connect_s", connect_s},
                       {"error", crowd_.last_error()}});
    const std::string line = AwaitGo(go);
    long long start_ns = 0, kill_ns = 0;
    if (std::sscanf(line.c_str(), "go %lld %lld", &start_ns, &kill_ns) != 2)
      return 1;
    Readiness readiness(&crowd_);
    double send_s =
        SendPhase(st_, &crowd_, &readiness, FromNs(start_ns),
                  kill_ns > 0 ? FromNs(kill_ns) : Clock::time_point(),
                  std::to_string(port_))
            .Run();
    Audit audit(&crowd_, &readiness);
    audit.Run();
    crowd_.WriteTimes(times_, port_);
    nlohmann::json end = audit.Tally();
    end["errors"] = crowd_.errors();
    end["send_s"] = send_s;
    end["error"] = crowd_.last_error();
    WriteLine(report, end);
    // Until every worker is done (the parent closes `go`): a worker that
    // left early would close its thousands of connections while the
    // others still measure.
    AwaitGo(go);
    return 0;
  }

 private:
  // The parent's word (or the end of `go`); meanwhile (other workers
  // still connecting or sending) an
  // eighth of the clients is looked at every 250 ms, as while sending:
  // left alone, every client's ping would fall due during the wait and
  // all would go at once when the sending starts.
  std::string AwaitGo(int go) {
    std::string line;
    for (;;) {
      pollfd p{go, POLLIN, 0};
      if (::poll(&p, 1, 250) > 0) {
        char c;
        if (::read(go, &c, 1) != 1 || c == '\n') return line;
        line += c;
        continue;
      }
      crowd_.KeepAlive((crowd_.connected().size() + 7) / 8);
    }
  }

  static void WriteLine(int fd, const nlohmann::json& j) {
    std::string line = j.dump() + "\n";
    if (::write(fd, line.data(), line.size()) < 0) std::_Exit(1);
  }

  const LocalCell& cell_;
  const ConnSettings& st_;
  int port_;  // frontd-0's (the one killed)
  std::string times_;
  Crowd crowd_;
};

// ---- In the parent ----

// The worker processes: forks them (even shares, so each client's partner
// is in its own worker), reads their reports and tells them when to send.
class WorkerPool {
 public:
  WorkerPool(const LocalCell& cell, const ConnSettings& st, int port,
             const std::string& dir)
      : dir_(dir) {
    unsigned per = ((st.clients / st.workers) + 1) & ~1u;
    for (unsigned w = 0, first = 0; w < st.workers && first < st.clients;
         ++w, first += per) {
      Start(cell, st, port, first, std::min(per, st.clients - first));
    }
  }

  size_t size() const { return workers_.size(); }
  // The last error any worker told of.
  const std::string& last_error() const { return last_error_; }

  // A report line from each worker, added up: whole numbers summed,
  // seconds (the others) the longest; "error" is left out.
  nlohmann::json Gather() {
    nlohmann::json sum = nlohmann::json::object();
    for (Worker& w : workers_) {
      nlohmann::json line = ReadLine(w.report);
      for (const auto& [key, v] : line.items()) {
        if (key == "error") {
          if (!v.get<std::string>().empty()) last_error_ = v;
        } else if (v.is_number_unsigned()) {
          sum[key] = sum.value(key, uint64_t{0}) + v.get<uint64_t>();
        } else {
          sum[key] = std::max(sum.value(key, 0.0), v.get<double>());
        }
      }
    }
    return sum;
  }

  // The sending starts at `start`; frontd-0 is killed at `kill` (the
  // epoch: never).
  void Go(Clock::time_point start, Clock::time_point kill) {
    std::string line =
        "go " + std::to_string(MonotonicNs(start)) + " " +
        std::to_string(kill == Clock::time_point() ? 0 : MonotonicNs(kill)) +
        "\n";
    for (Worker& w : workers_) {
      if (::write(w.go, line.data(), line.size()) !=
          static_cast<ssize_t>(line.size()))
        throw Exit{EX_SOFTWARE, "a worker died"};
    }
  }

  // The workers' times files (see TimesFile), once they have ended.
  std::vector<std::string> TimesFiles() const {
    std::vector<std::string> out;
    for (const Worker& w : workers_) out.push_back(TimesFile(dir_, w.first));
    return out;
  }

  // After their last report: all are told at once, then waited for.
  void Reap() {
    const double before = ChildrenCpuSeconds();
    for (Worker& w : workers_) ::close(w.go);
    for (Worker& w : workers_) {
      std::fclose(w.report);
      ::waitpid(w.pid, nullptr, 0);
    }
    cpu_s_ = ChildrenCpuSeconds() - before;
  }
  // The workers' CPU, all their life (once reaped): the clients' own cost,
  // on the same cores as the cell.
  double cpu_s() const { return cpu_s_; }

 private:
  static double ChildrenCpuSeconds() {
    rusage u{};
    ::getrusage(RUSAGE_CHILDREN, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  }

  double cpu_s_ = 0;
  struct Worker {
    pid_t pid;
    FILE* report;
    int go;
    unsigned first;
  };

  void Start(const LocalCell& cell, const ConnSettings& st, int port,
             unsigned first, unsigned n) {
    int rep[2], go[2];
    if (::pipe(rep) != 0 || ::pipe(go) != 0) throw Exit{EX_OSERR, "pipe"};
    pid_t pid = ::fork();
    if (pid < 0) throw Exit{EX_OSERR, "fork"};
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // no orphans if the parent dies
      if (::getppid() == 1) std::_Exit(1);
      ::close(rep[0]);
      ::close(go[1]);
      int rc = 1;
      try {
        rc = ConnectionsWorker(cell, st, port, TimesFile(dir_, first), first, n)
                 .Run(rep[1], go[0]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "natter-bench: worker: %s\n", e.what());
      } catch (const Exit& e) {
        std::fprintf(stderr, "natter-bench: worker: %s\n", e.message.c_str());
      }
      std::_Exit(rc);  // not the parent's destructors (the cell is its)
    }
    ::close(rep[1]);
    ::close(go[0]);
    workers_.push_back({pid, ::fdopen(rep[0], "r"), go[1], first});
  }

  static nlohmann::json ReadLine(FILE* f) {
    char line[4096];
    if (std::fgets(line, sizeof line, f) == nullptr)
      throw Exit{EX_SOFTWARE, "a worker died"};
    return nlohmann::json::parse(line);
  }

  std::string dir_;
  std::vector<Worker> workers_;
  std::string last_error_;
};

// What the workers' times files say (see TimesFile), in milliseconds and
// seconds.
struct Times {
  // send→delivered of every message, and of the quiet ones (neither end
  // on the killed frontd) sent before the kill and during the storm (from
  // the kill until the last of its clients was back).
  std::vector<double> all_ms, before_ms, storm_ms;
  std::vector<double> back_s;         // each client of the killed frontd
  uint64_t not_back = 0;              // had no session again by the end
  std::map<int, uint64_t> landed_on;  // where they are at the end

  static Times Read(const std::vector<std::string>& files, int64_t kill_ns) {
    Times t;
    struct Quiet {
      int64_t sent_ns;
      double ms;
    };
    std::vector<Quiet> quiet;
    for (const std::string& f : files) {
      std::ifstream in(f);
      char kind;
      while (in >> kind) {
        if (kind == 'L') {
          int64_t sent, latency;
          int q;
          in >> sent >> latency >> q;
          t.all_ms.push_back(latency / 1e6);
          if (q != 0) quiet.push_back({sent, latency / 1e6});
        } else {
          int64_t back;
          int frontd;
          in >> back >> frontd;
          if (back < 0) {
            ++t.not_back;
          } else {
            t.back_s.push_back(back / 1e9);
          }
          ++t.landed_on[frontd];
        }
      }
    }
    std::sort(t.all_ms.begin(), t.all_ms.end());
    std::sort(t.back_s.begin(), t.back_s.end());
    int64_t storm_end =
        kill_ns +
        static_cast<int64_t>((t.back_s.empty() ? 0.0 : t.back_s.back()) * 1e9);
    for (const Quiet& q : quiet) {
      if (kill_ns == 0 || q.sent_ns < kill_ns) {
        t.before_ms.push_back(q.ms);
      } else if (q.sent_ns <= storm_end) {
        t.storm_ms.push_back(q.ms);
      }
    }
    std::sort(t.before_ms.begin(), t.before_ms.end());
    std::sort(t.storm_ms.begin(), t.storm_ms.end());
    return t;
  }
};

nlohmann::json Percentiles(const std::vector<double>& sorted) {
  return {{"count", sorted.size()},
          {"p50", Quantile(sorted, 0.5)},
          {"p99", Quantile(sorted, 0.99)},
          {"max", sorted.empty() ? 0.0 : sorted.back()}};
}

// A run seen from the parent: the cell, its daemons and the workers.
class ConnectionsRun {
 public:
  ConnectionsRun(const ConnSettings& st, const BenchDir& dir, int port)
      : st_(st),
        port_(port),
        cell_(ProgramDir(), dir.path + "/cell", st.cell.shards, st.cell.Conf(),
              {}, "tcp://127.0.0.1:" + std::to_string(port), st.cell.replicas,
              st.cell.frontds),
        daemons_(cell_, st.cell),
        frontd_idle_(FrontdsRss()),
        before_(daemons_.Read()),
        workers_(cell_, st, port, dir.path) {}

  // Every client connects; two seconds later, the frontds' memory is read.
  void Connect() {
    start_ = Clock::now();
    connect_ = workers_.Gather();
    std::fprintf(
        stderr, "%llu clients connected in %.1f s, %llu refused%s%s\n",
        static_cast<unsigned long long>(connected()),
        connect_["connect_s"].get<double>(),
        static_cast<unsigned long long>(connect_["refused"].get<uint64_t>()),
        workers_.last_error().empty() ? "" : ": ",
        workers_.last_error().c_str());
    connected_ = daemons_.Read();
    std::this_thread::sleep_for(std::chrono::seconds(2));
    frontd_full_ = FrontdsRss();
  }

  // Every client sends (frontd-0 killed meanwhile if asked); the workers'
  // end reports.
  void Send() {
    auto start = Clock::now() + std::chrono::seconds(1);
    auto kill = st_.kill_frontd >= 0 ? start + Seconds(st_.kill_frontd)
                                     : Clock::time_point();
    workers_.Go(start, kill);
    if (kill != Clock::time_point()) {
      std::this_thread::sleep_until(kill);
      Kill();
    }
    send_ = workers_.Gather();
    hold_.Release();  // frontd-0 may come back
    workers_.Reap();
    elapsed_ = SecondsSince(start_);
    times_ = Times::Read(workers_.TimesFiles(),
                         kill == Clock::time_point() ? 0 : MonotonicNs(kill));
  }

  nlohmann::json Report() const {
    nlohmann::json out = Figures();
    PrintFigures(out);
    ReportCpu(&out);
    return out;
  }

  // Every client connected, every message processed and delivered, every
  // client of a killed frontd back.
  bool Complete() const {
    return connected() == st_.clients && Count("lost") == 0 &&
           Count("late") == 0 && Count("unchecked") == 0 &&
           Count("processed") == Count("sent") &&
           Count("sent") == Count("planned") && times_.not_back == 0;
  }

 private:
  uint64_t connected() const { return connect_["connected"].get<uint64_t>(); }
  uint64_t Count(const char* key) const { return send_[key].get<uint64_t>(); }

  // frontd-0 is killed, and its port held so that it does not come back
  // while the run lasts (natterctl's supervisor starts it again 100 ms
  // later; that one cannot listen): a frontd whose host is gone.
  void Kill() {
    killed_pid_ = daemons_.pid("frontd-0");
    ::kill(killed_pid_, SIGKILL);
    // The one killed (its thousands of connections take a while to
    // close), or one started again before the port was held.
    for (int attempt = 0; attempt < 500 && !(held_ = hold_.Take(port_));
         ++attempt) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      pid_t again = cell_.DaemonPid("frontd-0");
      if (again > 0 && again != killed_pid_) ::kill(again, SIGKILL);
    }
    std::fprintf(stderr,
                 "frontd-0 (pid %d) killed %.1f s into the sending; %s\n",
                 static_cast<int>(killed_pid_), st_.kill_frontd,
                 held_ ? "its port held until the end"
                       : "its port could not be held: it came back");
  }

  // The frontds' resident memory, added up.
  uint64_t FrontdsRss() const {
    uint64_t rss = 0;
    for (const std::string& f : daemons_.frontds())
      rss += ReadProc(daemons_.pid(f)).rss;
    return rss;
  }

  nlohmann::json Figures() const {
    uint64_t connected = this->connected();
    double connect_s = connect_["connect_s"], send_s = send_["send_s"];
    nlohmann::json out = {
        {"mode", "connections"},
        {"clients", st_.clients},
        {"workers", workers_.size()},
        {"shards", st_.cell.shards},
        {"clients_connected", connected},
        {"clients_refused", connect_["refused"]},
        {"connect_s", connect_s},
        {"connect_per_s", connect_s > 0 ? connected / connect_s : 0.0},
        {"frontd_rss_per_conn_bytes",
         connected > 0 ? (static_cast<double>(frontd_full_) -
                          static_cast<double>(frontd_idle_)) /
                             static_cast<double>(connected)
                       : 0.0},
        {"frontd_rss_idle_bytes", frontd_idle_},
        {"frontd_rss_connected_bytes", frontd_full_},
        {"elapsed_s", elapsed_},
        {"processed_per_s", send_s > 0 ? Count("processed") / send_s : 0.0},
        {"delivered_per_s", send_s > 0 ? Count("delivered") / send_s : 0.0},
        {"delivered_ms", Percentiles(times_.all_ms)}};
    if (st_.total_rate > 0) {
      out["total_rate"] = st_.total_rate;
      out["seconds"] = st_.seconds;
    } else {
      out["messages"] = st_.messages;
      out["rate"] = st_.rate;
    }
    for (const char* key :
         {"planned", "sent", "processed", "delivered", "lost", "late",
          "unchecked", "errors", "send_s", "moves_killed", "moves_others"}) {
      out[key] = send_[key];
    }
    if (st_.kill_frontd >= 0) {
      nlohmann::json landed = nlohmann::json::object();
      for (const auto& [f, n] : times_.landed_on)
        landed["frontd-" + std::to_string(f)] = n;
      out["storm"] = {
          {"kill_at_s", st_.kill_frontd},
          {"port_held", held_},
          {"clients", times_.back_s.size() + times_.not_back},
          {"not_back", times_.not_back},
          {"back_s", Percentiles(times_.back_s)},
          {"landed_on", landed},
          {"quiet_delivered_ms_before", Percentiles(times_.before_ms)},
          {"quiet_delivered_ms_during", Percentiles(times_.storm_ms)}};
    }
    return out;
  }

  void PrintFigures(const nlohmann::json& out) const {
    std::fprintf(
        stderr,
        "frontds: %.1f MB idle, %.1f MB with %llu clients: %.1f KiB a client\n",
        frontd_idle_ / 1048576.0, frontd_full_ / 1048576.0,
        static_cast<unsigned long long>(connected()),
        out["frontd_rss_per_conn_bytes"].get<double>() / 1024);
    if (Count("errors") > 0)
      std::fprintf(stderr, "an error: %s\n", workers_.last_error().c_str());
    std::fprintf(stderr,
                 "%llu sent, %llu processed, %llu delivered, %llu late (in the "
                 "partner's history, "
                 "not yet seen live), %llu unchecked (no history in time), "
                 "%llu lost, %llu errors "
                 "in %.1f s\n",
                 static_cast<unsigned long long>(Count("sent")),
                 static_cast<unsigned long long>(Count("processed")),
                 static_cast<unsigned long long>(Count("delivered")),
                 static_cast<unsigned long long>(Count("late")),
                 static_cast<unsigned long long>(Count("unchecked")),
                 static_cast<unsigned long long>(Count("lost")),
                 static_cast<unsigned long long>(Count("errors")),
                 send_["send_s"].get<double>());
    std::fprintf(stderr,
                 "send→delivered: p50 %.1f ms, p99 %.1f ms, max %.1f ms\n",
                 Quantile(times_.all_ms, 0.5), Quantile(times_.all_ms, 0.99),
                 times_.all_ms.empty() ? 0.0 : times_.all_ms.back());
    std::fprintf(stderr,
                 "moves to another frontd while sending: %llu by the killed "
                 "frontd's clients, %llu by the others\n",
                 static_cast<unsigned long long>(Count("moves_killed")),
                 static_cast<unsigned long long>(Count("moves_others")));
    if (st_.kill_frontd < 0) return;
    std::fprintf(stderr,
                 "storm: %zu clients of frontd-0 back in p50 %.1f s, p99 "
                 "%.1f s, all %.1f s (%llu not back)\n",
                 times_.back_s.size() + times_.not_back,
                 Quantile(times_.back_s, 0.5), Quantile(times_.back_s, 0.99),
                 times_.back_s.empty() ? 0.0 : times_.back_s.back(),
                 static_cast<unsigned long long>(times_.not_back));
    for (const auto& [f, n] : times_.landed_on) {
      std::fprintf(stderr, "  %llu on frontd-%d at the end\n",
                   static_cast<unsigned long long>(n), f);
    }
    std::fprintf(
        stderr,
        "the other clients' send→delivered: before the kill p50 %.1f "
        "ms, p99 %.1f ms; during the storm p50 %.1f ms, p99 %.1f ms\n",
        Quantile(times_.before_ms, 0.5), Quantile(times_.before_ms, 0.99),
        Quantile(times_.storm_ms, 0.5), Quantile(times_.storm_ms, 0.99));
  }

  // Each daemon's CPU while the clients connected and while they sent, and
  // the cell's per client and per message.  A killed frontd's is not
  // known (its process is gone): the cell's figure then leaves it out.
  void ReportCpu(nlohmann::json* out) const {
    double connect_cpu = 0, send_cpu = 0;
    std::fprintf(stderr, "%-10s %12s %12s\n", "daemon", "connect cpu s",
                 "send cpu s");
    for (const auto& [name, now] : daemons_.Read()) {
      double c = connected_.at(name).cpu_s - before_.at(name).cpu_s;
      connect_cpu += c;
      nlohmann::json d = {{"connect_cpu_s", c}};
      if (daemons_.pid(name) == killed_pid_ || now.rss == 0) {
        d["send_cpu_s"] = nullptr;
        std::fprintf(stderr, "%-10s %12.2f %12s\n", name.c_str(), c, "killed");
      } else {
        double sc = now.cpu_s - connected_.at(name).cpu_s;
        send_cpu += sc;
        d["send_cpu_s"] = sc;
        d["cpu_s"] = now.cpu_s - before_.at(name).cpu_s;
        d["cpu_us_per_msg"] = MicrosPerMessage(sc, Count("sent"));
        std::fprintf(stderr, "%-10s %12.2f %12.2f\n", name.c_str(), c, sc);
      }
      (*out)["daemons"][name] = d;
    }
    uint64_t connected = this->connected(), sent = Count("sent");
    (*out)["cell_cpu_us_per_connect"] =
        connected > 0 ? 1e6 * connect_cpu / connected : 0.0;
    (*out)["cell_cpu_us_per_msg"] = MicrosPerMessage(send_cpu, sent);
    (*out)["clients_cpu_s"] = workers_.cpu_s();
    std::fprintf(stderr,
                 "the cell's CPU: %.0f us a connection, %.0f us a message; "
                 "the bench's clients: %.1f s of CPU (connecting and "
                 "sending, on the same cores)\n",
                 (*out)["cell_cpu_us_per_connect"].get<double>(),
                 (*out)["cell_cpu_us_per_msg"].get<double>(), workers_.cpu_s());
  }

  const ConnSettings& st_;
  int port_;  // frontd-0's
  LocalCell cell_;
  Daemons daemons_;
  PortHold hold_;
  bool held_ = false;
  uint64_t frontd_idle_ = 0, frontd_full_ = 0;
  std::map<std::string, ProcStats> before_, connected_;
  WorkerPool workers_;
  Clock::time_point start_;
  pid_t killed_pid_ = -1;
  nlohmann::json connect_, send_;  // the workers' reports, added up
  Times times_;
  double elapsed_ = 0;
};

}  // namespace

int Connections(const std::vector<std::string>& args) {
  ConnSettings st = ParseConnections(args);
  BenchDir dir(st.cell.dir, st.cell.keep);
  int port = FreeLoopbackPorts(st.cell.frontds);  // one for each frontd
  if (port == 0) throw Exit{EX_OSERR, "cannot find free ports"};
  ConnectionsRun run(st, dir, port);
  run.Connect();
  run.Send();
  nlohmann::json out = run.Report();
  Emit(&out, st.cell);
  return run.Complete() ? EX_OK : 1;
}

}  // namespace bench
}  // namespace natter
