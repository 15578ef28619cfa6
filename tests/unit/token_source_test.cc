// Token sources (natter --token-file, --token-command), and how the client
// library uses one when its session's token nears its end or the session
// ends, against a stand-in for frontd.
#include "client/token_source.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "client/client.h"
#include "common/ids.h"
#include "common/net.h"
#include "tests/support/temp_dir.h"
#include "tests/support/wait.h"

using namespace natter;

namespace {

uint64_t NowS() { return NowMs() / 1000; }

}  // namespace

TEST_CASE("a token file gives its first line, read again at each call") {
  TempDir dir;
  std::string path = dir.path() + "/token";
  std::ofstream(path) << "nt1.first\r\nsecond\n";
  TokenSource source = TokenFile(path);
  std::string token;
  REQUIRE(source(&token).ok());
  CHECK(token == "nt1.first");
  std::ofstream(path, std::ios::trunc) << "nt1.fresh\n";
  REQUIRE(source(&token).ok());
  CHECK(token == "nt1.fresh");

  std::ofstream(path, std::ios::trunc) << "\nnt1.second-line\n";
  Status s = source(&token);
  CHECK(s.code() == ErrorCode::kTokenMalformed);
  CHECK(s.message().find("empty") != std::string::npos);
  s = TokenFile(dir.path() + "/none")(&token);
  CHECK(s.code() == ErrorCode::kTokenMalformed);
  CHECK(s.message().find(dir.path() + "/none") != std::string::npos);
}

TEST_CASE("a token command gives the first line it prints, and fails clearly") {
  std::string token;
  REQUIRE(TokenCommand("printf 'nt1.a\\nnt1.b\\n'", 5000)(&token).ok());
  CHECK(token == "nt1.a");
  // Its standard input is not natter's (which rpc and chat read).
  Status s = TokenCommand("cat", 5000)(&token);
  CHECK(s.code() == ErrorCode::kUnavailable);
  CHECK(s.message().find("printed no token") != std::string::npos);
  s = TokenCommand("echo nt1.x; exit 3", 5000)(&token);
  CHECK(s.code() == ErrorCode::kUnavailable);
  CHECK(s.message().find("exited with 3") != std::string::npos);
  auto start = std::chrono::steady_clock::now();
  s = TokenCommand("sleep 30", 300)(&token);
  CHECK(s.code() == ErrorCode::kUnavailable);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
  CHECK(token == "nt1.a");
}

namespace {

// A stand-in for frontd on inproc://, in a thread of its own: welcomes
// hellos (with the expiry set for their token, else an hour from now) or
// refuses the tokens it is told to, answers pings, and sends the client
// whatever it is given.
class FakeFrontd {
 public:
  explicit FakeFrontd(zmq::context_t& ctx)
      : router_(ctx, zmq::socket_type::router) {
    static std::atomic<int> n{0};
    endpoint_ = "inproc://fake-frontd-" + std::to_string(++n);
    router_.set(zmq::sockopt::linger, 0);
    router_.bind(endpoint_);
    thread_ = std::thread([this] { Run(); });
  }
  ~FakeFrontd() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  void Expires(const std::string& token, uint64_t expires) {
    std::lock_guard<std::mutex> lock(mu_);
    expires_[token] = expires;
  }
  void Refuse(const std::string& token) {
    std::lock_guard<std::mutex> lock(mu_);
    expires_[token] = 0;
  }
  std::vector<std::string> Hellos() {
    std::lock_guard<std::mutex> lock(mu_);
    return hellos_;
  }
  size_t Others() {
    std::lock_guard<std::mutex> lock(mu_);
    return others_;
  }
  // An error with corr 0, as frontd sends when it ends a session.
  void Unasked(ErrorCode code, const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    outbox_.push_back(EncodeError(Header(), Status(code, message)));
  }
  void UnaskedPong() {
    std::lock_guard<std::mutex> lock(mu_);
    outbox_.push_back(EncodeReply(Header(), Pong()));
  }

 private:
  void Run() {
    while (!stop_) {
      std::vector<zmq::pollitem_t> items = {
          {router_.handle(), 0, ZMQ_POLLIN, 0}};
      Poll(items, 10);
      Parts parts;
      while (RecvParts(router_, &parts)) {
        if (parts.size() != 2) continue;
        peer_ = parts[0].to_string();
        Frame f;
        if (!DecodeFrame(parts[1].data(), parts[1].size(), &f).ok()) continue;
        Answer(f);
      }
      std::lock_guard<std::mutex> lock(mu_);
      for (const std::string& frame : outbox_) Send(frame);
      outbox_.clear();
    }
  }
  void Answer(const Frame& f) {
    std::lock_guard<std::mutex> lock(mu_);
    if (f.type() == MsgType::kPing) {
      Send(EncodeReply(f.header, Pong()));
      return;
    }
    if (f.type() != MsgType::kHello) {
      ++others_;
      return;
    }
    Hello hello;
    if (!DecodeBody(f, &hello).ok()) return;
    hellos_.push_back(hello.token);
    auto it = expires_.find(hello.token);
    if (it != expires_.end() && it->second == 0) {
      Send(EncodeError(f.header,
                       Status(ErrorCode::kTokenExpired, "token expired")));
      return;
    }
    Welcome w;
    w.user = UserId(7);
    w.device = hello.device;
    w.expires = it != expires_.end() ? it->second : NowS() + 3600;
    Send(EncodeReply(f.header, w));
  }
  void Send(const std::string& frame) {
    if (peer_.empty()) return;
    Parts parts;
    parts.push_back(ToMessage(peer_));
    parts.push_back(ToMessage(frame));
    SendParts(router_, parts);
  }

  zmq::socket_t router_;
  std::string endpoint_;
  std::string peer_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::map<std::string, uint64_t> expires_;  // 0: refused
  std::vector<std::string> hellos_;
  size_t others_ = 0;
  std::vector<std::string> outbox_;
};

// A client of the fake frontd that leaves the mailbox alone (so that it
// sends nothing of its own but hellos and pings).
ClientOptions FakeOptions(const FakeFrontd& frontd) {
  ClientOptions o;
  o.server = frontd.endpoint();
  o.token = "nt1.first";
  o.receive = false;
  o.timeout_ms = 5000;
  return o;
}

// A token source that always gives token, counting its calls.
TokenSource Gives(const std::string& token, int* calls = nullptr) {
  return [token, calls](std::string* out) {
    if (calls != nullptr) ++*calls;
    *out = token;
    return Status::Ok();
  };
}

// Polls the client for `seconds`, whatever comes: time passing, on
// purpose, to see that nothing (more) happens.  What the client hands out
// goes into *got.
void PollFor(Client& client, std::vector<Incoming>* got, double seconds) {
  auto until = std::chrono::steady_clock::now() +
               std::chrono::milliseconds(static_cast<int>(seconds * 1000));
  while (std::chrono::steady_clock::now() < until) client.Poll(10, got);
}

// Polls the client until done() holds; if 10 s pass first, the test fails.
void PollUntil(Client& client, std::vector<Incoming>* got,
               const std::string& what, const std::function<bool()>& done) {
  WaitUntil(what, done, 10, [&] { client.Poll(10, got); });
}

}  // namespace

TEST_CASE(
    "a client with a token source says hello with a fresh one before its token "
    "expires") {
  zmq::context_t ctx(1);
  FakeFrontd frontd(ctx);
  frontd.Expires("nt1.first", NowS() + 20);  // within the 30 s it renews ahead
  ClientOptions o = FakeOptions(frontd);
  int calls = 0;
  std::vector<Incoming> got;
  SECTION("a fresh token: a hello with it, and nothing else sent again") {
    o.token_source = Gives("nt1.fresh", &calls);
    Client client(o, &ctx);
    REQUIRE(client.Connect().ok());
    PollUntil(client, &got, "a hello with the fresh token",
              [&] { return frontd.Hellos().size() >= 2; });
    REQUIRE(frontd.Hellos() ==
            std::vector<std::string>{"nt1.first", "nt1.fresh"});
    // The fresh token's welcome (an hour) ends it: nothing more in a second.
    PollFor(client, &got, 1);
    CHECK(frontd.Hellos().size() == 2);
    CHECK(frontd.Others() == 0);
  }
  SECTION(
      "the same token (the file not yet rewritten): no hello, and not asked at "
      "every poll") {
    o.token_source = Gives("nt1.first", &calls);
    Client client(o, &ctx);
    REQUIRE(client.Connect().ok());
    PollFor(client, &got, 1.5);
    CHECK(frontd.Hellos().size() == 1);
  }
  CHECK(calls == 1);
  CHECK(got.empty());
}

TEST_CASE(
    "when frontd ends the session, a client with a token source says hello "
    "again at once") {
  zmq::context_t ctx(1);
  FakeFrontd frontd(ctx);
  ClientOptions o = FakeOptions(frontd);
  o.token_source = Gives("nt1.fresh");
  Client client(o, &ctx);
  REQUIRE(client.Connect().ok());
  std::vector<Incoming> got;
  PollFor(client, &got, 0.3);
  CHECK(frontd.Hellos().size() == 1);  // an hour left: nothing to renew yet
  frontd.Unasked(ErrorCode::kTokenUnknownKey,
                 "the key that signed your token was retired");
  PollUntil(client, &got, "a hello with the fresh token",
            [&] { return frontd.Hellos().size() >= 2; });
  REQUIRE(frontd.Hellos() ==
          std::vector<std::string>{"nt1.first", "nt1.fresh"});
  PollFor(client, &got, 0.3);  // nothing to hand out
  CHECK(got.empty());
}

TEST_CASE(
    "when frontd ends the session and no fresh token comes, the client hands "
    "out why") {
  zmq::context_t ctx(1);
  FakeFrontd frontd(ctx);
  ClientOptions o = FakeOptions(frontd);
  std::vector<std::string> hellos = {"nt1.first"};
  std::string because = "your token expired";
  SECTION("no token source") {}
  SECTION("a fresh token that frontd refuses") {
    frontd.Refuse("nt1.stale");
    o.token_source = Gives("nt1.stale");
    hellos.push_back("nt1.stale");
    because = "token expired";
  }
  SECTION("a token source that fails") {
    o.token_source = [](std::string*) {
      return Status(ErrorCode::kUnavailable,
                    "token command 'get-token': exited with 1");
    };
    because = "no fresh token: token command 'get-token': exited with 1";
  }
  Client client(o, &ctx);
  REQUIRE(client.Connect().ok());
  std::vector<Incoming> got;
  // Other frames nobody asked for are not the application's business.
  frontd.UnaskedPong();
  frontd.Unasked(ErrorCode::kMalformed, "a request is one frame");
  PollFor(client, &got, 0.5);
  CHECK(got.empty());
  frontd.Unasked(ErrorCode::kTokenExpired,
                 "your token expired; say hello with a new one");
  PollUntil(client, &got, "the client to hand out why the session ended",
            [&] { return !got.empty(); });
  REQUIRE(got.size() == 1);
  CHECK(got[0].SessionOver());
  CHECK(got[0].error.code() == ErrorCode::kTokenExpired);
  CHECK(got[0].error.message().find(because) != std::string::npos);
  CHECK(frontd.Hellos() == hellos);
}

TEST_CASE(
    "a client with a token source and no token takes its first from the "
    "source") {
  zmq::context_t ctx(1);
  FakeFrontd frontd(ctx);
  ClientOptions o = FakeOptions(frontd);
  o.token.clear();
  o.token_source = Gives("nt1.from-source");
  REQUIRE(Client(o, &ctx).Connect().ok());
  CHECK(frontd.Hellos() == std::vector<std::string>{"nt1.from-source"});
  o.token_source = [](std::string*) {
    return Status(ErrorCode::kTokenMalformed, "token file /x: cannot read it");
  };
  Status s = Client(o, &ctx).Connect();
  CHECK(s.code() == ErrorCode::kTokenMalformed);
  CHECK(s.message() == "token file /x: cannot read it");
}
