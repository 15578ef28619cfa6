// Access tokens: claims signed with an Ed25519 key of the cell (libsodium).
//
//   nt1.<base64url(claims)>.<base64url(signature of the claims bytes)>
//
// The claims are a MessagePack array [user, device, issued, expires, key_id]
// (seconds since the epoch; device may be empty for "any device").  The key
// id names the signing key, so keys can rotate: a verifier holds every
// public key the cell accepts.
//
// Key files hold one line of standard base64: keys/token/<key-id>.pub (32
// bytes) and <key-id>.sec (64 bytes, mode 0600).
#ifndef NATTER_COMMON_TOKEN_H_
#define NATTER_COMMON_TOKEN_H_

#include <array>
#include <cstdint>
#include <map>
#include <msgpack.hpp>
#include <string>
#include <vector>

#include "common/proto.h"
#include "common/status.h"
#include "common/types.h"

namespace natter {

// Tokens issued slightly in the future, or expired slightly in the past, by
// this many seconds are accepted (clocks of hosts differ a little).
constexpr uint64_t kTokenClockSkew = 60;

struct TokenClaims {
  UserId user;
  std::string device;
  uint64_t issued = 0;
  uint64_t expires = 0;
  std::string key_id;
  NATTER_WIRE(5, user, device, issued, expires, key_id)
};

struct SigningKey {
  std::string id;
  std::array<uint8_t, 32> public_key{};
  std::array<uint8_t, 64> secret_key{};
};

// A new random signing key; its id is derived from its public key.
SigningKey GenerateSigningKey();

// The key id of a public key: 8 hex digits of its BLAKE2b hash.
std::string KeyIdOf(const std::array<uint8_t, 32>& public_key);

// Writes <dir>/<id>.pub and <dir>/<id>.sec (0600); refuses to overwrite.
Status WriteSigningKey(const std::string& dir, const SigningKey& key);

// Reads <dir>/<id>.sec (the newest one when id is empty).
Status ReadSigningKey(const std::string& dir, const std::string& id,
                      SigningKey* out);

std::string SignToken(const TokenClaims& claims, const SigningKey& key);

// Holds the public keys tokens may be signed with.  Not thread-safe.
class TokenVerifier {
 public:
  void AddKey(const std::string& id, const std::array<uint8_t, 32>& key);
  // Loads every <id>.pub in dir; replaces the keys held.
  Status LoadDir(const std::string& dir);
  size_t key_count() const { return keys_.size(); }
  std::vector<std::string> KeyIds() const;
  bool HasKey(const std::string& id) const { return keys_.count(id) != 0; }

  // Checks shape, key, signature and time; fills claims when ok.
  Status Verify(const std::string& token, uint64_t now_s,
                TokenClaims* claims) const;

 private:
  std::map<std::string, std::array<uint8_t, 32>> keys_;
};

std::string Base64UrlEncode(const uint8_t* data, size_t size);
bool Base64UrlDecode(const std::string& in, std::string* out);

// Reads the first line of a file; false if it cannot.
bool ReadFirstLine(const std::string& path, std::string* out);
// Writes content to path with mode, failing if it exists.
Status WriteNewFile(const std::string& path, const std::string& content,
                    int mode);

}  // namespace natter

#endif  // NATTER_COMMON_TOKEN_H_
