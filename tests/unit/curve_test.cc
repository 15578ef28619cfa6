// A key's role from its file name in peer-keys, and which roles each
// socket's ZAP domain admits.
#include <catch2/catch.hpp>

#include <fstream>

#include "common/curve.h"
#include "tests/support/temp_dir.h"

using namespace natter;

TEST_CASE("a key's name gives its role: the role alone or followed by - . _ @ and anything") {
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
  for (const char* name : {"", "newhost", "frontdx", "frontd2", "Frontd", "ADMIN", "-frontd",
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
      if (DomainAdmits(domain, r)) roles += std::string(roles.empty() ? "" : " ") + PeerRoleName(r);
    }
    return roles;
  };
  CHECK(admits(kZapDomainRouted) == "frontd stored");
  CHECK(admits(kZapDomainShard) == "routed");
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

TEST_CASE("a peer-keys folder gives each key the roles of its names; a name with no role is an error") {
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
  CHECK(roles == std::multiset<PeerRole>{PeerRole::kFrontd, PeerRole::kStored, PeerRole::kAdmin});

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
