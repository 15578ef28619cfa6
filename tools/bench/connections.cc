// natter-bench connections: many clients connected at once, each sending a
// few messages slowly.  The clients live in worker processes (each below
// its open-files limit), connecting to frontd over TCP from source
// addresses 127.0.0.2 and up so that ports never run out.  The parent
// starts the cell and the workers, reads frontd's memory idle and with
// every client connected, then lets the workers send and adds up their
// reports.
//
// A worker tells the parent on a pipe (one JSON line after connecting, one
// at the end) and waits for a line on another pipe between the two.
#include <sys/epoll.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
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
  double connect_rate = 2000;  // new clients a second, all workers
  unsigned workers = 0;        // 0: one per 5000 clients
  size_t text_bytes = 256;
  CellOptions cell;
};

ConnSettings ParseConnections(const std::vector<std::string>& args) {
  ConnSettings st;
  po::options_description opts;
  opts.add_options()("clients", UintValue("clients", &st.clients))(
      "messages", UintValue("messages", &st.messages))(
      "rate", po::value(&st.rate))("connect-rate", po::value(&st.connect_rate))(
      "workers", UintValue("workers", &st.workers))(
      "text-bytes", UintValue("text-bytes", &st.text_bytes));
  ParseMode("connections", args, opts, &st.cell);
  if (st.clients < 2 || st.rate <= 0 || st.connect_rate <= 0 ||
      st.text_bytes < 16 || st.text_bytes > kMaxTextBytes) {
    throw Exit{
        EX_USAGE,
        "connections: --clients >= 2, --rate and --connect-rate above 0, "
        "--text-bytes 16 to 4096"};
  }
  if (st.workers == 0) st.workers = (st.clients + 4999) / 5000;
  return st;
}

int FreePort() {
  int port = FreeLoopbackPort();
  if (port == 0) throw Exit{EX_OSERR, "cannot find a free port"};
  return port;
}

// ---- In a worker process ----

// One client of a worker and what it has seen.
struct Member {
  std::unique_ptr<Client> client;  // null: it did not connect
  Clock::time_point next;          // when it sends next
  unsigned sent = 0;
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
  // the catch-up), a few at each turn, as an application would.
  void KeepAlive() {
    for (int j = 0; j < 16 && !connected_.empty(); ++j) {
      idle_.clear();
      members_[connected_[keep_alive_++ % connected_.size()]].client->Poll(
          0, &idle_);
    }
  }

  void Look(unsigned k) {
    Member& m = members_[k];
    in_.clear();
    m.client->Poll(0, &in_);
    for (const Incoming& i : in_) Take(m, i);
  }

 private:
  void Take(Member& m, const Incoming& i) {
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
    if (got != nullptr && got->from != m.client->user())
      m.delivered.insert(got->id.value);
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
};

// Connects a crowd's clients one by one at the worker's share of
// --connect-rate, each from a source address of its own.
class Dialer {
 public:
  Dialer(const LocalCell& cell, const ConnSettings& st, int port, Crowd* crowd)
      : cell_(cell),
        port_(port),
        crowd_(crowd),
        pace_(Seconds(std::max(1u, st.workers) / st.connect_rate)) {}

  // Returns the seconds it took.
  double Run() {
    auto start = Clock::now(), next = start;
    for (unsigned k = 0; k < crowd_->size(); ++k) {
      crowd_->KeepAlive();
      std::this_thread::sleep_until(next);
      next += pace_;
      Member& m = (*crowd_)[k];
      m.client = std::make_unique<Client>(OptionsFor(crowd_->first() + k),
                                          &crowd_->ctx());
      crowd_->Connected(k, m.client->Connect());
    }
    return SecondsSince(start);
  }

 private:
  ClientOptions OptionsFor(unsigned i) const {
    ClientOptions o = cell_.Options(100000 + i, "bench");
    o.server = "tcp://127.0.0." + std::to_string(2 + i % 250) +
               ":0;127.0.0.1:" + std::to_string(port_);
    o.state_dir.clear();
    o.timeout_ms = 60000;
    o.resync_ms = 60000;
    return o;
  }

  const LocalCell& cell_;
  int port_;
  Crowd* crowd_;
  Clock::duration pace_;
};

// The clients' ZMQ_FDs in an epoll set: the worker sleeps there and looks
// at a client when its descriptor says something came.  A pass over
// thousands of clients every few ms would take the CPU from the cell.
class Readiness {
 public:
  explicit Readiness(Crowd& crowd) : ep_(::epoll_create1(EPOLL_CLOEXEC)) {
    if (ep_ < 0) throw Exit{EX_OSERR, "epoll_create1 failed"};
    for (unsigned k : crowd.connected()) Watch(crowd[k].client->PollItem(), k);
  }
  ~Readiness() { ::close(ep_); }
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
  void Watch(const zmq::pollitem_t& item, unsigned k) {
    int fd = -1;
    size_t len = sizeof fd;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u32 = k;
    if (zmq_getsockopt(item.socket, ZMQ_FD, &fd, &len) != 0 ||
        ::epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      throw Exit{EX_OSERR, "cannot watch a client's socket"};
    }
  }

  int ep_;
  std::vector<epoll_event> events_ = std::vector<epoll_event>(1024);
};

// The sending time: each client sends --messages at --rate to its partner,
// starting at a random moment of its first interval so the load is spread,
// until every answer and every delivery has come (at most the sending time
// and 120 s more).  A client is looked at when its descriptor wakes, when
// it is due to send, and (for the client library's timers:
// acknowledgements, pings, retries) in a sweep over all every 250 ms.
class SendPhase {
 public:
  SendPhase(const ConnSettings& st, Crowd* crowd, Readiness* readiness)
      : messages_(st.messages),
        gap_(Seconds(1.0 / st.rate)),
        text_(st.text_bytes, 'x'),
        crowd_(crowd),
        readiness_(readiness) {}

  // Returns the seconds it took.
  double Run() {
    auto start = Clock::now();
    Schedule(start);
    auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                gap_ * messages_ + std::chrono::seconds(120));
    next_sweep_ = start;
    while (Clock::now() < deadline) {
      auto now = Clock::now();
      SendDue(now);
      if (now >= next_sweep_ && Sweep(now)) break;
      Sleep();
    }
    return SecondsSince(start);
  }

 private:
  // Each client's first moment, and the clients in the order they are due.
  void Schedule(Clock::time_point start) {
    std::minstd_rand rng(crowd_->first() + 1);
    for (unsigned k : crowd_->connected()) {
      (*crowd_)[k].next =
          start + std::chrono::duration_cast<Clock::duration>(
                      gap_ * (static_cast<double>(rng() % 1000) / 1000.0));
    }
    for (unsigned k : crowd_->connected()) {
      if ((k ^ 1u) < crowd_->size() && messages_ > 0)
        due_.emplace((*crowd_)[k].next, k);
    }
  }

  void SendDue(Clock::time_point now) {
    while (!due_.empty() && due_.begin()->first <= now) {
      unsigned k = due_.begin()->second;
      due_.erase(due_.begin());
      Member& m = (*crowd_)[k];
      m.client->Send(crowd_->user(k ^ 1u), text_);
      m.next += gap_;
      if (++m.sent < messages_) due_.emplace(m.next, k);
      crowd_->Look(k);
    }
  }

  // A quarter of the clients each time: each is looked at every second.
  // True when all is done.
  bool Sweep(Clock::time_point now) {
    const std::vector<unsigned>& connected = crowd_->connected();
    for (size_t j = 0; j < (connected.size() + 3) / 4; ++j) {
      crowd_->Look(connected[sweep_at_++ % connected.size()]);
    }
    next_sweep_ = now + std::chrono::milliseconds(250);
    return AllDone();
  }

  // Every message sent and answered, and every partner's delivered.
  bool AllDone() const {
    for (unsigned k : crowd_->connected()) {
      const Member& m = (*crowd_)[k];
      if (m.sent < messages_ || m.client->SendsInFlight() > 0) return false;
      if (crowd_->Partner(k) != nullptr && m.delivered.size() < messages_)
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

  unsigned messages_;
  Clock::duration gap_;
  std::string text_;
  Crowd* crowd_;
  Readiness* readiness_;
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
    uint64_t sent = 0, processed = 0, delivered = 0, lost = 0, late = 0,
             unchecked = 0;
    for (unsigned k : crowd_->connected()) {
      const Member& m = (*crowd_)[k];
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
    return {{"sent", sent}, {"processed", processed}, {"delivered", delivered},
            {"lost", lost}, {"late", late},           {"unchecked", unchecked}};
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
                    unsigned first, unsigned n)
      : cell_(cell), st_(st), port_(port), crowd_(first, n) {}

  // Tells the parent on `report`, waits for its word on `go`; returns the
  // process's exit code.
  int Run(int report, int go) {
    double connect_s = Dialer(cell_, st_, port_, &crowd_).Run();
    WriteLine(report, {{"connected", crowd_.connected().size()},
                       {"refused", crowd_.refused()},
                       {"connect_s", connect_s},
                       {"error", crowd_.last_error()}});
    char buf[8];
    if (::read(go, buf, sizeof buf) <= 0) return 1;
    Readiness readiness(crowd_);
    double send_s = SendPhase(st_, &crowd_, &readiness).Run();
    Audit audit(&crowd_, &readiness);
    audit.Run();
    nlohmann::json end = audit.Tally();
    end["errors"] = crowd_.errors();
    end["send_s"] = send_s;
    end["error"] = crowd_.last_error();
    WriteLine(report, end);
    return 0;
  }

 private:
  static void WriteLine(int fd, const nlohmann::json& j) {
    std::string line = j.dump() + "\n";
    if (::write(fd, line.data(), line.size()) < 0) std::_Exit(1);
  }

  const LocalCell& cell_;
  const ConnSettings& st_;
  int port_;
  Crowd crowd_;
};

// ---- In the parent ----

// The worker processes: forks them (even shares, so each client's partner
// is in its own worker), reads their reports and tells them when to send.
class WorkerPool {
 public:
  WorkerPool(const LocalCell& cell, const ConnSettings& st, int port) {
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

  void Go() {
    for (Worker& w : workers_) {
      if (::write(w.go, "go\n", 3) != 3)
        throw Exit{EX_SOFTWARE, "a worker died"};
    }
  }

  // After their last report.
  void Reap() {
    for (Worker& w : workers_) {
      std::fclose(w.report);
      ::close(w.go);
      ::waitpid(w.pid, nullptr, 0);
    }
  }

 private:
  struct Worker {
    pid_t pid;
    FILE* report;
    int go;
  };

  void Start(const LocalCell& cell, const ConnSettings& st, int port,
             unsigned first, unsigned n) {
    int rep[2], go[2];
    if (::pipe(rep) != 0 || ::pipe(go) != 0) throw Exit{EX_OSERR, "pipe"};
    pid_t pid = ::fork();
    if (pid < 0) throw Exit{EX_OSERR, "fork"};
    if (pid == 0) {
      ::close(rep[0]);
      ::close(go[1]);
      int rc = 1;
      try {
        rc = ConnectionsWorker(cell, st, port, first, n).Run(rep[1], go[0]);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "natter-bench: worker: %s\n", e.what());
      } catch (const Exit& e) {
        std::fprintf(stderr, "natter-bench: worker: %s\n", e.message.c_str());
      }
      std::_Exit(rc);  // not the parent's destructors (the cell is its)
    }
    ::close(rep[1]);
    ::close(go[0]);
    workers_.push_back({pid, ::fdopen(rep[0], "r"), go[1]});
  }

  static nlohmann::json ReadLine(FILE* f) {
    char line[4096];
    if (std::fgets(line, sizeof line, f) == nullptr)
      throw Exit{EX_SOFTWARE, "a worker died"};
    return nlohmann::json::parse(line);
  }

  std::vector<Worker> workers_;
  std::string last_error_;
};

// A run seen from the parent: the cell, its daemons and the workers.
class ConnectionsRun {
 public:
  ConnectionsRun(const ConnSettings& st, const BenchDir& dir, int port)
      : st_(st),
        cell_(ProgramDir(), dir.path + "/cell", st.cell.shards, st.cell.Conf(),
              {}, "tcp://127.0.0.1:" + std::to_string(port), st.cell.replicas),
        daemons_(cell_, st.cell),
        frontd_idle_(ReadProc(daemons_.pid("frontd"))),
        before_(daemons_.Read()),
        workers_(cell_, st, port) {}

  // Every client connects; two seconds later, frontd's memory is read.
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
    std::this_thread::sleep_for(std::chrono::seconds(2));
    frontd_full_ = ReadProc(daemons_.pid("frontd"));
  }

  // Every client sends; the workers' end reports.
  void Send() {
    workers_.Go();
    send_ = workers_.Gather();
    workers_.Reap();
    elapsed_ = SecondsSince(start_);
  }

  nlohmann::json Report() const {
    nlohmann::json out = Figures();
    PrintFigures(out);
    for (const auto& [name, now] : daemons_.Read()) {
      double cpu = now.cpu_s - before_.at(name).cpu_s;
      out["daemons"][name] = {{"cpu_s", cpu}};
      std::fprintf(stderr, "%-10s %8.2f cpu s\n", name.c_str(), cpu);
    }
    return out;
  }

  // Every client connected, every message processed and delivered.
  bool Complete() const {
    return connected() == st_.clients && Count("lost") == 0 &&
           Count("late") == 0 && Count("unchecked") == 0 &&
           Count("processed") == Count("sent") &&
           Count("sent") == connected() * st_.messages;
  }

 private:
  uint64_t connected() const { return connect_["connected"].get<uint64_t>(); }
  uint64_t Count(const char* key) const { return send_[key].get<uint64_t>(); }

  nlohmann::json Figures() const {
    uint64_t connected = this->connected();
    double connect_s = connect_["connect_s"], send_s = send_["send_s"];
    nlohmann::json out = {
        {"mode", "connections"},
        {"clients", st_.clients},
        {"messages", st_.messages},
        {"rate", st_.rate},
        {"workers", workers_.size()},
        {"shards", st_.cell.shards},
        {"clients_connected", connected},
        {"clients_refused", connect_["refused"]},
        {"connect_per_s", connect_s > 0 ? connected / connect_s : 0.0},
        {"frontd_rss_per_conn_bytes",
         connected > 0 ? (static_cast<double>(frontd_full_.rss) -
                          static_cast<double>(frontd_idle_.rss)) /
                             static_cast<double>(connected)
                       : 0.0},
        {"frontd_rss_idle_bytes", frontd_idle_.rss},
        {"frontd_rss_connected_bytes", frontd_full_.rss},
        {"elapsed_s", elapsed_},
        {"processed_per_s", send_s > 0 ? Count("processed") / send_s : 0.0},
        {"delivered_per_s", send_s > 0 ? Count("delivered") / send_s : 0.0}};
    for (const char* key : {"sent", "processed", "delivered", "lost", "late",
                            "unchecked", "errors", "send_s"}) {
      out[key] = send_[key];
    }
    return out;
  }

  void PrintFigures(const nlohmann::json& out) const {
    std::fprintf(
        stderr,
        "frontd: %.1f MB idle, %.1f MB with %llu clients: %.1f KiB a client\n",
        frontd_idle_.rss / 1048576.0, frontd_full_.rss / 1048576.0,
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
  }

  const ConnSettings& st_;
  LocalCell cell_;
  Daemons daemons_;
  ProcStats frontd_idle_, frontd_full_;
  std::map<std::string, ProcStats> before_;
  WorkerPool workers_;
  Clock::time_point start_;
  nlohmann::json connect_, send_;  // the workers' reports, added up
  double elapsed_ = 0;
};

}  // namespace

int Connections(const std::vector<std::string>& args) {
  ConnSettings st = ParseConnections(args);
  BenchDir dir(st.cell.dir, st.cell.keep);
  ConnectionsRun run(st, dir, FreePort());
  run.Connect();
  run.Send();
  nlohmann::json out = run.Report();
  Emit(&out, st.cell);
  return run.Complete() ? EX_OK : 1;
}

}  // namespace bench
}  // namespace natter
