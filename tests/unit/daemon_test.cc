// The daemon skeleton and the daemons' factories: each daemon is made by a
// Create that checks its configuration and returns a Status (nothing is
// bound or opened until Start); the skeleton learns a daemon's name and
// threads from its spec; reading an option that options.cc does not
// declare is a programming error, not an empty string.
#include "common/daemon.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/config.h"
#include "common/curve.h"
#include "common/log.h"
#include "common/token.h"
#include "daemons/frontd/frontd.h"
#include "daemons/notifyd/notifyd.h"
#include "daemons/routed/routed.h"
#include "daemons/stored/stored.h"
#include "tests/support/temp_dir.h"

using namespace natter;
using Catch::Matchers::Contains;

namespace {

using Values = std::map<std::string, std::string>;

// A configuration every daemon of the section takes (inproc:// endpoints,
// folders in dir), with changes on top.
Config Sample(const std::string& section, const TempDir& dir,
              const Values& changes = {}) {
  Values v = {
      {"shards", "inproc://daemon-test-shard-0 inproc://daemon-test-shard-1"},
      {"routed", "inproc://daemon-test-routed"},
      {"notifyd-in", "inproc://daemon-test-notifyd-in"},
      {"notifyd-out", "inproc://daemon-test-notifyd-out"},
      {"token-keys", dir.path() + "/token"}};
  if (section == "frontd") v["listen"] = "inproc://daemon-test-front";
  if (section == "stored") v["data-dir"] = dir.path() + "/data";
  if (section == "routed") v["id-lease"] = dir.path() + "/routed.lease";
  for (const auto& [key, value] : changes) v[key] = value;
  return Config::FromMap(section, v);
}

// A folder with a token key, as frontd's token-keys needs.
void AddTokenKey(const TempDir& dir) {
  ::mkdir((dir.path() + "/token").c_str(), 0700);
  REQUIRE(WriteSigningKey(dir.path() + "/token", GenerateSigningKey()).ok());
}

// What a factory of the spec says about config: "" when it makes the
// daemon, else its error (which must be a configuration error, and leave
// nothing made).
std::string Refusal(const DaemonSpec& spec, const Config& config) {
  zmq::context_t ctx(1);
  std::unique_ptr<Service> service;
  Status s = spec.make(config, ctx, &service);
  if (s.ok()) {
    CHECK(service != nullptr);
    return "";
  }
  CHECK(s.code() == ErrorCode::kBadRequest);
  CHECK(service == nullptr);
  return s.message();
}

// Refusal of the spec's factory for the sample config of its section with
// changes.
std::function<std::string(const Values&)> RefusalOf(const DaemonSpec& spec,
                                                    const TempDir& dir) {
  return [spec, &dir](const Values& changes) {
    return Refusal(spec, Sample(spec.section, dir, changes));
  };
}

// Runs DaemonMain with args; its exit code and what it wrote to stderr.
int RunDaemonMain(const DaemonSpec& spec, std::vector<std::string> args,
                  std::string* err) {
  TempDir dir;
  const std::string err_path = dir.path() + "/stderr";
  std::fflush(stderr);
  int saved = ::dup(2);
  int fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ::dup2(fd, 2);
  ::close(fd);
  args.insert(args.begin(), spec.program);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(&a[0]);
  int rc = DaemonMain(static_cast<int>(argv.size()), argv.data(), spec);
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  LogInit("unit-tests", false, LogLevel::kWarn);  // as tests/unit/main.cc
  std::ifstream in(err_path);
  std::stringstream text;
  text << in.rdbuf();
  *err = text.str();
  return rc;
}

}  // namespace

TEST_CASE(
    "reading an option options.cc does not declare for the daemon fails "
    "loudly, naming it") {
  Config stored = Config::FromMap("stored", {});
  CHECK(stored.Get("batch-max") == "1024");  // its own section
  CHECK(stored.Get("curve-ipc") == "yes");   // and [cell]
  CHECK_THROWS_AS(stored.Get("io-threads"), std::logic_error);  // frontd's
  CHECK_THROWS_WITH(
      stored.Get("io-threads"),
      "option 'io-threads' is not declared for [stored] or [cell] in "
      "common/options.cc");
  uint64_t n = 0;
  CHECK_THROWS_WITH(stored.GetUint("max-in-flght", &n),
                    Contains("'max-in-flght'"));
  CHECK_THROWS_WITH(stored.GetDuration("session-timeout", &n),
                    Contains("'session-timeout'"));
  CHECK_THROWS_WITH(stored.GetList("listen-in"), Contains("'listen-in'"));
  CHECK_THROWS_AS(Config().Get("shards"), std::logic_error);  // nothing loaded
  // A test or a tool that names one is told as loudly.
  CHECK_THROWS_WITH(Config::FromMap("routed", {{"drop-every", "2"}}),
                    Contains("'drop-every' is not declared for [routed]"));
}

TEST_CASE(
    "DaemonMain exits EX_SOFTWARE with one line for an undeclared option, "
    "EX_CONFIG for a bad value") {
  TempDir dir;
  const std::string conf = dir.path() + "/natter.conf";
  std::ofstream(conf) << "[cell]\nshards = ipc://a\n";
  DaemonSpec spec(
      "natter-test", "routed",
      [](const Config& config, zmq::context_t&, std::unique_ptr<Service>*) {
        config.Get("data-dir");  // stored's, not routed's
        return Status::Ok();
      });
  std::string err;
  CHECK(RunDaemonMain(spec, {"-n", "-c", conf}, &err) == EX_SOFTWARE);
  CHECK(err ==
        "natter-test: internal error: option 'data-dir' is not declared for "
        "[routed] or "
        "[cell] in common/options.cc\n");

  spec.make = [](const Config&, zmq::context_t&, std::unique_ptr<Service>*) {
    return Status(ErrorCode::kBadRequest, "generator: must be 0 to 255");
  };
  CHECK(RunDaemonMain(spec, {"-n", "-c", conf}, &err) == EX_CONFIG);
  CHECK(err == "natter-test: generator: must be 0 to 255\n");
}

TEST_CASE(
    "the skeleton names each daemon from its spec: frontd, routed, stored-N, "
    "notifyd") {
  TempDir dir;
  DaemonSettings settings;
  REQUIRE(ReadDaemonSettings(stored::Spec(),
                             Sample("stored", dir, {{"shard", "1"}}), &settings)
              .ok());
  CHECK(settings.name == "stored-1");
  CHECK(settings.io_threads == 1);
  REQUIRE(ReadDaemonSettings(frontd::Spec(), Sample("frontd", dir), &settings)
              .ok());
  CHECK(settings.name == "frontd");
  REQUIRE(ReadDaemonSettings(routed::Spec(), Sample("routed", dir), &settings)
              .ok());
  CHECK(settings.name == "routed");
  REQUIRE(ReadDaemonSettings(notifyd::Spec(), Sample("notifyd", dir), &settings)
              .ok());
  CHECK(settings.name == "notifyd");
  CHECK(settings.io_threads == 1);
  CHECK(std::string(stored::Spec().program) == "natter-stored");
  CHECK(std::string(notifyd::Spec().section) == "notifyd");
}

TEST_CASE(
    "frontd's io-threads still loads (1 to 16) but adds no I/O thread: its "
    "clients' connections are its own thread's") {
  TempDir dir;
  DaemonSettings settings;
  REQUIRE(ReadDaemonSettings(frontd::Spec(),
                             Sample("frontd", dir, {{"io-threads", "3"}}),
                             &settings)
              .ok());
  CHECK(settings.io_threads == 1);
  AddTokenKey(dir);
  zmq::context_t ctx(1);
  std::unique_ptr<frontd::Frontd> made;
  Config ok = Sample("frontd", dir, {{"io-threads", "3"}});
  CHECK(frontd::Frontd::Create(ok, ctx, &made).ok());
  for (const char* bad : {"0", "17", "x", ""}) {
    INFO(bad);
    Status s = frontd::Frontd::Create(
        Sample("frontd", dir, {{"io-threads", bad}}), ctx, &made);
    CHECK(s.code() == ErrorCode::kBadRequest);
    CHECK(s.message() == "io-threads: 1 to 16");
  }
}

TEST_CASE(
    "every daemon is made from a sample config, reading only options it "
    "declares") {
  // Create reads every option of its daemon, so an undeclared one throws
  // here; the skeleton's own reads too.
  TempDir dir;
  AddTokenKey(dir);
  const std::vector<std::pair<DaemonSpec, Config>> daemons = {
      {frontd::Spec(), Sample("frontd", dir)},
      {routed::Spec(), Sample("routed", dir)},
      {routed::Spec(),
       Sample("routed", dir, {{"listen", "inproc://daemon-test-own"}})},
      {stored::Spec(), Sample("stored", dir)},
      {stored::Spec(),
       Sample("stored", dir, {{"listen", "inproc://daemon-test-own"}})},
      {notifyd::Spec(), Sample("notifyd", dir)},
      {notifyd::Spec(), Sample("notifyd", dir,
                               {{"listen-in", "inproc://daemon-test-in"},
                                {"listen-out", "inproc://daemon-test-out"}})},
  };
  for (const auto& [spec, config] : daemons) {
    INFO(spec.program);
    DaemonSettings settings;
    CHECK_NOTHROW(ReadDaemonSettings(spec, config, &settings));
    std::string refusal;
    CHECK_NOTHROW(refusal = Refusal(spec, config));
    CHECK(refusal == "");
  }
}

TEST_CASE("a factory binds and opens nothing: that is Start's") {
  TempDir dir;
  AddTokenKey(dir);
  zmq::context_t ctx(1);
  std::unique_ptr<frontd::Frontd> front;
  REQUIRE(frontd::Frontd::Create(Sample("frontd", dir), ctx, &front).ok());
  std::unique_ptr<stored::Stored> shard;
  REQUIRE(stored::Stored::Create(Sample("stored", dir), ctx, &shard).ok());
  std::unique_ptr<notifyd::Notifyd> notify;
  REQUIRE(notifyd::Notifyd::Create(Sample("notifyd", dir), ctx, &notify).ok());
  std::unique_ptr<routed::Routed> route;
  REQUIRE(routed::Routed::Create(Sample("routed", dir), ctx, &route).ok());
  for (const char* endpoint :
       {"inproc://daemon-test-front", "inproc://daemon-test-shard-0",
        "inproc://daemon-test-routed", "inproc://daemon-test-notifyd-in",
        "inproc://daemon-test-notifyd-out"}) {
    INFO(endpoint);
    zmq::socket_t s(ctx, zmq::socket_type::pair);
    CHECK_NOTHROW(s.bind(endpoint));  // still free
  }
  CHECK(::access((dir.path() + "/data").c_str(), F_OK) != 0);
  CHECK(::access((dir.path() + "/routed.lease").c_str(), F_OK) != 0);
}

TEST_CASE("frontd's factory refuses a bad value, naming it") {
  TempDir dir;
  AddTokenKey(dir);
  auto refusal = RefusalOf(frontd::Spec(), dir);
  CHECK(refusal({{"session-timeout", "0"}}) ==
        "session-timeout: must be above 0");
  CHECK(refusal({{"hello-timeout", "soon"}}) ==
        "hello-timeout: 'soon' is not a duration (90s, 15m, 24h, 7d)");
  CHECK(refusal({{"max-in-flight", "0"}}) ==
        "max-in-flight: must be at least 1");
  CHECK(refusal({{"max-queued", "1000"}}) ==
        "max-queued: must be at least 65536");
  CHECK(refusal({{"max-clients", "-1"}}) ==
        "max-clients: '-1' is not a whole number");
  CHECK(refusal({{"io-threads", "17"}}) == "io-threads: 1 to 16");
  CHECK(refusal({{"listen", ""}}) == "listen: no endpoint");
  CHECK(refusal({{"routed", ""}}) == "routed: no endpoint");
  CHECK(refusal({{"notifyd-out", ""}}) == "notifyd-out: no endpoint");
  CHECK_THAT(
      refusal({{"token-keys", dir.path() + "/none"}}),
      Catch::Matchers::StartsWith("token-keys: " + dir.path() + "/none: "));
}

TEST_CASE("routed's factory refuses a bad value, naming it") {
  TempDir dir;
  auto refusal = RefusalOf(routed::Spec(), dir);
  CHECK(refusal({{"generator", "300"}}) == "generator: must be 0 to 255");
  CHECK(refusal({{"generator", "two"}}) ==
        "generator: 'two' is not a whole number");
  CHECK(refusal({{"shards", ""}}) == "shards: the shard map is empty");
  CHECK(refusal({{"routed", ""}}) == "routed: no endpoint");
  CHECK(refusal({{"routed", ""}, {"listen", "inproc://daemon-test-own"}}) ==
        "");
}

TEST_CASE("stored's factory refuses a bad value, naming it") {
  TempDir dir;
  auto refusal = RefusalOf(stored::Spec(), dir);
  CHECK(refusal({{"shard", "2"}}) == "shard 2 is not in the shard map of 2");
  CHECK(refusal({{"shard", "1"}}) == "");
  CHECK(refusal({{"shards", ""}}) == "shards: the shard map is empty");
  CHECK(refusal({{"batch-max", "0"}}) == "batch-max: 1 to 2000");
  CHECK(refusal({{"batch-max", "2001"}}) == "batch-max: 1 to 2000");
  CHECK(refusal({{"replica", "1"}}) ==
        "replica 1 is not among the 1 replicas of shard 0");
  CHECK(refusal({{"log-entries", "9"}}) == "log-entries: at least 10");
  CHECK(refusal({{"handoff-retry", "1y"}}) ==
        "handoff-retry: '1y' is not a duration (90s, 15m, 24h, 7d)");
  CHECK_THAT(refusal({{"user-burst", "4"}}),
             Catch::Matchers::StartsWith("user-burst: must be 0 or at least"));
  CHECK(refusal({{"routed", ""}}) == "routed: no endpoint");
  CHECK(refusal({{"notifyd-in", ""}}) == "notifyd-in: no endpoint");
}

TEST_CASE("notifyd's factory refuses a bad value, naming it") {
  TempDir dir;
  auto refusal = RefusalOf(notifyd::Spec(), dir);
  CHECK(refusal({{"drop-every", "junk"}}) ==
        "drop-every: 'junk' is not a whole number");
  CHECK(refusal({{"notifyd-in", ""}}) == "notifyd-in: no endpoint");
  CHECK(refusal({{"notifyd-out", ""}}) == "notifyd-out: no endpoint");
  CHECK(refusal({{"notifyd-out", ""},
                 {"listen-out", "inproc://daemon-test-out"}}) == "");
}

TEST_CASE(
    "a daemon's keys are made by a factory that refuses a bad configuration") {
  TempDir dir;
  DaemonKeys keys;
  auto refusal = [&](const std::string& section, const Values& v) {
    Status s = DaemonKeys::Create(Config::FromMap(section, v), &keys);
    if (!s.ok()) CHECK(s.code() == ErrorCode::kBadRequest);
    return s.message();
  };
  CHECK(refusal("routed", {}) == "");
  CHECK_FALSE(keys.identity().enabled);
  CHECK(refusal("routed", {{"curve-ipc", "maybe"}}) ==
        "curve-ipc: 'maybe' is not yes or no");
  CHECK_THAT(refusal("stored", {{"secret-key", dir.path() + "/none.key"}}),
             Catch::Matchers::StartsWith("secret-key: "));
  CurveKey public_key;
  REQUIRE(WriteCurveKeyPair(dir.path(), "routed", &public_key).ok());
  const std::string secret = dir.path() + "/routed.key";
  CHECK(refusal("routed", {{"secret-key", secret}}) ==
        "peer-keys: a daemon with a secret-key needs the cell's peer keys");
  CHECK_THAT(refusal("routed", {{"secret-key", secret},
                                {"peer-keys", dir.path() + "/none"}}),
             Catch::Matchers::StartsWith("peer-keys: "));
  // The folder with the pair in it: routed.pub names a role.
  CHECK(refusal("routed",
                {{"secret-key", secret}, {"peer-keys", dir.path()}}) == "");
  CHECK(keys.identity().enabled);
  CHECK(keys.identity().public_key == public_key);
}
