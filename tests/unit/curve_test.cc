// A key's role from its file name in peer-keys, and which roles each
// socket's ZAP domain admits.
#include "common/curve.h"

#include <catch2/catch.hpp>
#include <fstream>

#include "tests/support/temp_dir.h"

using namespace natter;

TEST_CASE(
    "a key's name gives its role: the role alone or followed by - . _ @ and "
    "anything") {
  CHECK(PeerRoleOfName("frontd") == PeerRole::kFrontd);
  CHECK(PeerRoleOfName("routed") == PeerRole::kRouted);
  CHECK(PeerRoleOfName("stored") == PeerRole::kStored);
  CHECK(PeerRoleOfName("notifyd") == PeerRole::kNotifyd);
  CHECK(PeerRoleOfName("admin") == PeerRole::kAdmin);
  CHECK(PeerRoleOfName("frontd-2") == PeerRole::kFrontd);
  CHECK(PeerRoleOfName("stored@host3") == PeerRole::kStored);
  CHECK(PeerRoleOfName("routed.old") == PeerRole::kRouted);
  CHECK(PeerRoleOfName("notifyd_b") == PeerRole::kNotifyd);
  CHECK(PeerRoleOfName("admin-alice@laptop") == PeerRole::kAdmin);
  CHECK(PeerRoleOfName("stored-") == PeerRole::kStored);
}

TEST_CASE("a name that names no role gives none") {
  for (const char* name :
       {"", "newhost", "frontdx", "frontd2", "Frontd", "ADMIN", "-frontd",
        "host-frontd", "stored+1", "stored 1", "admins", "cell", "clients"}) {
    INFO(name);
    CHECK_FALSE(PeerRoleOfName(name).has_value());
  }
}

TEST_CASE("each socket's domain admits only the roles that talk to it") {
  auto admits = [](const char* domain) {
    std::string roles;
    for (PeerRole r : {PeerRole::kFrontd, PeerRole::kRouted, PeerRole::kStored,
                       PeerRole::kNotifyd, PeerRole::kAdmin}) {
      if (DomainAdmits(domain, r))
        roles += std::string(roles.empty() ? "" : " ") + PeerRoleName(r);
    }
    return roles;
  };
  CHECK(admits(kZapDomainRouted) == "frontd stored");
  CHECK(admits(kZapDomainShard) == "routed stored");
  CHECK(admits(kZapDomainNotifydIn) == "stored");
  CHECK(admits(kZapDomainNotifydOut) == "frontd");
  CHECK(admits(kZapDomainControl) == "admin");
  // A domain of another form admits no peer.
  CHECK(admits("clients").empty());
  CHECK(admits("cell").empty());
  CHECK(admits("").empty());
  CHECK(admits("admin").empty());
  CHECK(admits("cell:adminx,frontd-2").empty());
}

namespace {

void WriteKey(const std::string& path) {
  char pub[41], sec[41];
  REQUIRE(zmq_curve_keypair(pub, sec) == 0);
  std::ofstream(path) << pub << "\n";
}

}  // namespace

TEST_CASE(
    "a peer-keys folder gives each key the roles of its names; a name with no "
    "role is an error") {
  TempDir dir;
  WriteKey(dir.path() + "/frontd-1.pub");
  WriteKey(dir.path() + "/stored@host3.pub");
  WriteKey(dir.path() + "/admin.pub");
  std::ofstream(dir.path() + "/admin.key") << "not a public key, not read\n";
  PeerKeys keys;
  REQUIRE(LoadPeerKeys(dir.path(), &keys).ok());
  REQUIRE(keys.size() == 3);
  std::multiset<PeerRole> roles;
  for (const auto& [key, r] : keys) roles.insert(r.begin(), r.end());
  CHECK(roles == std::multiset<PeerRole>{PeerRole::kFrontd, PeerRole::kStored,
                                         PeerRole::kAdmin});

  // The same key under two names has both roles.
  std::string line;
  std::ifstream(dir.path() + "/admin.pub") >> line;
  std::ofstream(dir.path() + "/routed.pub") << line << "\n";
  REQUIRE(LoadPeerKeys(dir.path(), &keys).ok());
  CHECK(keys.size() == 3);
  bool both = false;
  for (const auto& [key, r] : keys) {
    both = both || r == std::set<PeerRole>{PeerRole::kRouted, PeerRole::kAdmin};
  }
  CHECK(both);

  WriteKey(dir.path() + "/newhost.pub");
  Status s = LoadPeerKeys(dir.path(), &keys);
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("newhost.pub") != std::string::npos);
  CHECK(s.message().find("no role") != std::string::npos);
  CHECK(keys.size() == 3);  // untouched
}

namespace {

// A Z85 key that holds both '@' (the endpoint's separator) and '#' (a
// comment in config files), and the same key in hex.
const std::string kZ85 = "@#000abcdefghijABCDEFGHIJ.-:+=0123456#@0";

std::string HexOf(const std::string& z85) {
  CurveKey key;
  REQUIRE(zmq_z85_decode(key.data(), z85.c_str()) != nullptr);
  return CurveKeyHex(key);
}

}  // namespace

TEST_CASE(
    "an endpoint's server key is 40 characters of Z85 or 64 hex digits, told "
    "by its length") {
  CurveKey want;
  REQUIRE(zmq_z85_decode(want.data(), kZ85.c_str()) != nullptr);
  const std::string hex = HexOf(kZ85);

  Endpoint ep;
  SECTION("Z85 holding '@' and '#'") {
    REQUIRE(ParseEndpoint("tcp://10.0.0.5:7421@" + kZ85, &ep).ok());
    CHECK(ep.address == "tcp://10.0.0.5:7421");
    CHECK(ep.has_key);
    CHECK(ep.server_key == want);
  }
  SECTION("an address that holds '@' itself") {
    REQUIRE(ParseEndpoint("ipc:///run/natter@2/s.sock@" + kZ85, &ep).ok());
    CHECK(ep.address == "ipc:///run/natter@2/s.sock");
    CHECK(ep.server_key == want);
    REQUIRE(ParseEndpoint("ipc:///run/natter@2/s.sock@" + hex, &ep).ok());
    CHECK(ep.address == "ipc:///run/natter@2/s.sock");
    CHECK(ep.server_key == want);
  }
  SECTION("hex, as natterctl wrote it before") {
    REQUIRE(ParseEndpoint("tcp://10.0.0.5:7421@" + hex, &ep).ok());
    CHECK(ep.address == "tcp://10.0.0.5:7421");
    CHECK(ep.server_key == want);
  }
  SECTION("no '@', no key") {
    REQUIRE(ParseEndpoint("ipc:///run/natter/s.sock", &ep).ok());
    CHECK(ep.address == "ipc:///run/natter/s.sock");
    CHECK_FALSE(ep.has_key);
  }
  SECTION("the address to bind leaves the key out") {
    CHECK(BindAddress("tcp://*:7421@" + kZ85) == "tcp://*:7421");
    CHECK(BindAddress("tcp://*:7421@" + hex) == "tcp://*:7421");
  }
  SECTION("anything else after an '@' is refused, naming both forms") {
    for (const std::string& key :
         {std::string(), kZ85.substr(1), kZ85 + "0", hex.substr(1), hex + "0",
          kZ85.substr(0, 39) + "~", kZ85.substr(0, 39) + " ",
          hex.substr(0, 63) + "g", std::string(40, '%')}) {
      INFO(key);
      Status s = ParseEndpoint("tcp://10.0.0.5:7421@" + key, &ep);
      CHECK_FALSE(s.ok());
      CHECK(s.message().find("40 characters of Z85 or 64 hex digits") !=
            std::string::npos);
    }
  }
}

TEST_CASE(
    "a key file holds Z85 or hex; anything else is refused, naming both "
    "forms") {
  TempDir dir;
  CurveKey z85_key, hex_key;
  std::ofstream(dir.path() + "/z85.pub") << kZ85 << "\n";
  std::ofstream(dir.path() + "/hex.pub") << HexOf(kZ85) << "\n";
  REQUIRE(ReadCurveKey(dir.path() + "/z85.pub", &z85_key).ok());
  REQUIRE(ReadCurveKey(dir.path() + "/hex.pub", &hex_key).ok());
  CHECK(z85_key == hex_key);

  std::ofstream(dir.path() + "/short.pub") << kZ85.substr(1) << "\n";
  Status s = ReadCurveKey(dir.path() + "/short.pub", &z85_key);
  CHECK_FALSE(s.ok());
  CHECK(s.message().find("40 characters of Z85 or 64 hex digits") !=
        std::string::npos);
}
