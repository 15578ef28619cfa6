#include "common/token.h"

#include <catch2/catch.hpp>
#include <ctime>

using namespace natter;

namespace {

TokenClaims Claims(uint64_t user, uint64_t now, uint64_t ttl) {
  TokenClaims c;
  c.user = UserId(user);
  c.issued = now;
  c.expires = now + ttl;
  return c;
}

}  // namespace

TEST_CASE("a token signed by a listed key is accepted with its claims") {
  SigningKey key = GenerateSigningKey();
  TokenVerifier v;
  v.AddKey(key.id, key.public_key);
  uint64_t now = static_cast<uint64_t>(std::time(nullptr));
  TokenClaims c = Claims(7, now, 3600);
  c.device = "phone";
  TokenClaims out;
  REQUIRE(v.Verify(SignToken(c, key), now, &out).ok());
  CHECK(out.user == UserId(7));
  CHECK(out.device == "phone");
  CHECK(out.expires == now + 3600);
  CHECK(out.key_id == key.id);
}

TEST_CASE("an expired token is refused as expired") {
  SigningKey key = GenerateSigningKey();
  TokenVerifier v;
  v.AddKey(key.id, key.public_key);
  uint64_t now = 1800000000;
  std::string t = SignToken(Claims(7, now - 7200, 3600), key);
  TokenClaims out;
  CHECK(v.Verify(t, now, &out).code() == ErrorCode::kTokenExpired);
  // Within the allowed clock skew it still passes.
  CHECK(v.Verify(t, now - 3600 + kTokenClockSkew / 2, &out).ok());
}

TEST_CASE("a forged token is refused") {
  SigningKey key = GenerateSigningKey(), other = GenerateSigningKey();
  TokenVerifier v;
  v.AddKey(key.id, key.public_key);
  uint64_t now = static_cast<uint64_t>(std::time(nullptr));
  TokenClaims out;
  SECTION("signed by a key the cell does not know") {
    Status s = v.Verify(SignToken(Claims(7, now, 60), other), now, &out);
    CHECK(s.code() == ErrorCode::kTokenUnknownKey);
    CHECK(s.message().find(other.id) != std::string::npos);
  }
  SECTION("signed by an unknown key whose id is a forged log line") {
    // Anyone can write any key id: the refusal, which frontd logs, names
    // it only when it is a plain word.
    other.id = "x\nuser=1 event=forged \x1b[2J";
    Status s = v.Verify(SignToken(Claims(7, now, 60), other), now, &out);
    CHECK(s.code() == ErrorCode::kTokenUnknownKey);
    CHECK(s.message() == "token signed by an unknown key");
  }
  SECTION("signed by another key claiming the cell's key id") {
    // Re-sign the claims naming key.id with the other secret key.
    SigningKey impostor = other;
    impostor.id = key.id;
    CHECK(v.Verify(SignToken(Claims(7, now, 60), impostor), now, &out).code() ==
          ErrorCode::kTokenBadSignature);
  }
  SECTION("claims changed after signing") {
    std::string good = SignToken(Claims(7, now, 60), key);
    std::string evil = SignToken(Claims(8, now, 60), key);
    // alice's claims with bob's... the signature of another token.
    std::string mixed =
        evil.substr(0, evil.rfind('.')) + good.substr(good.rfind('.'));
    CHECK(v.Verify(mixed, now, &out).code() == ErrorCode::kTokenBadSignature);
  }
}

TEST_CASE("malformed tokens are refused as malformed") {
  TokenVerifier v;
  SigningKey key = GenerateSigningKey();
  v.AddKey(key.id, key.public_key);
  TokenClaims out;
  for (const char* t :
       {"", "nt1.", "nt1.abc", "nt1.!!!.???", "jwt.a.b", "nt1.AAAA.AAAA"}) {
    CHECK(v.Verify(t, 0, &out).code() == ErrorCode::kTokenMalformed);
  }
  CHECK(v.Verify(std::string(5000, 'a'), 0, &out).code() ==
        ErrorCode::kTokenMalformed);
}
