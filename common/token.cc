#include "common/token.h"

#include <dirent.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "common/text.h"

namespace natter {
namespace {

const char kTokenPrefix[] = "nt1.";

bool Base64Decode(const std::string& in, int variant, std::string* out) {
  out->assign(in.size(), '\0');
  size_t len = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(&(*out)[0]),
                        out->size(), in.data(), in.size(), nullptr, &len,
                        nullptr, variant) != 0) {
    return false;
  }
  out->resize(len);
  return true;
}

std::string Base64Encode(const uint8_t* data, size_t size, int variant) {
  std::string out(sodium_base64_encoded_len(size, variant), '\0');
  sodium_bin2base64(&out[0], out.size(), data, size, variant);
  out.resize(std::strlen(out.c_str()));
  return out;
}

}  // namespace

std::string Base64UrlEncode(const uint8_t* data, size_t size) {
  return Base64Encode(data, size, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

bool Base64UrlDecode(const std::string& in, std::string* out) {
  return Base64Decode(in, sodium_base64_VARIANT_URLSAFE_NO_PADDING, out);
}

bool ReadFirstLine(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in || !std::getline(in, *out)) return false;
  while (!out->empty() && (out->back() == '\r' || out->back() == ' ')) {
    out->pop_back();
  }
  return true;
}

Status WriteNewFile(const std::string& path, const std::string& content,
                    int mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, mode);
  if (fd < 0) {
    return Status(ErrorCode::kInternal, path + ": " + std::strerror(errno));
  }
  ::fchmod(fd, mode);
  ssize_t n = ::write(fd, content.data(), content.size());
  bool ok = n == static_cast<ssize_t>(content.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return Status(ErrorCode::kInternal, path + ": short write");
  return Status::Ok();
}

std::string KeyIdOf(const std::array<uint8_t, 32>& public_key) {
  uint8_t hash[16];
  crypto_generichash(hash, sizeof hash, public_key.data(), public_key.size(),
                     nullptr, 0);
  return ToHex(hash, 4);
}

SigningKey GenerateSigningKey() {
  if (sodium_init() < 0) std::abort();
  SigningKey key;
  crypto_sign_keypair(key.public_key.data(), key.secret_key.data());
  key.id = KeyIdOf(key.public_key);
  return key;
}

Status WriteSigningKey(const std::string& dir, const SigningKey& key) {
  const int v = sodium_base64_VARIANT_ORIGINAL;
  Status s = WriteNewFile(
      dir + "/" + key.id + ".sec",
      Base64Encode(key.secret_key.data(), key.secret_key.size(), v) + "\n",
      0600);
  if (!s.ok()) return s;
  return WriteNewFile(
      dir + "/" + key.id + ".pub",
      Base64Encode(key.public_key.data(), key.public_key.size(), v) + "\n",
      0644);
}

Status ReadSigningKey(const std::string& dir, const std::string& id,
                      SigningKey* out) {
  std::string path;
  if (!id.empty()) {
    path = dir + "/" + id + ".sec";
  } else {
    // The newest secret key in the folder signs.
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) {
      return Status(ErrorCode::kNotFound, dir + ": " + std::strerror(errno));
    }
    struct timespec newest = {0, 0};
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name.size() < 5 || name.substr(name.size() - 4) != ".sec") continue;
      struct stat st;
      std::string p = dir + "/" + name;
      if (::stat(p.c_str(), &st) != 0) continue;
      bool newer = st.st_mtim.tv_sec > newest.tv_sec ||
                   (st.st_mtim.tv_sec == newest.tv_sec &&
                    st.st_mtim.tv_nsec > newest.tv_nsec);
      if (path.empty() || newer) {
        newest = st.st_mtim;
        path = p;
      }
    }
    ::closedir(d);
    if (path.empty()) {
      return Status(ErrorCode::kNotFound, dir + ": no signing key (*.sec)");
    }
  }
  std::string line, raw;
  if (!ReadFirstLine(path, &line)) {
    return Status(ErrorCode::kNotFound, path + ": cannot read");
  }
  if (!Base64Decode(line, sodium_base64_VARIANT_ORIGINAL, &raw) ||
      raw.size() != out->secret_key.size()) {
    return Status(ErrorCode::kBadData, path + ": not an Ed25519 secret key");
  }
  std::memcpy(out->secret_key.data(), raw.data(), raw.size());
  crypto_sign_ed25519_sk_to_pk(out->public_key.data(), out->secret_key.data());
  out->id = KeyIdOf(out->public_key);
  return Status::Ok();
}

std::string SignToken(const TokenClaims& claims, const SigningKey& key) {
  TokenClaims c = claims;
  c.key_id = key.id;
  msgpack::sbuffer buf;
  msgpack::pack(buf, c);
  uint8_t sig[crypto_sign_BYTES];
  crypto_sign_detached(sig, nullptr,
                       reinterpret_cast<const uint8_t*>(buf.data()), buf.size(),
                       key.secret_key.data());
  return kTokenPrefix +
         Base64UrlEncode(reinterpret_cast<const uint8_t*>(buf.data()),
                         buf.size()) +
         "." + Base64UrlEncode(sig, sizeof sig);
}

std::vector<std::string> TokenVerifier::KeyIds() const {
  std::vector<std::string> ids;
  for (const auto& [id, key] : keys_) ids.push_back(id);
  return ids;
}

void TokenVerifier::AddKey(const std::string& id,
                           const std::array<uint8_t, 32>& key) {
  keys_[id] = key;
}

Status TokenVerifier::LoadDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return Status(ErrorCode::kNotFound, dir + ": " + std::strerror(errno));
  }
  std::map<std::string, std::array<uint8_t, 32>> keys;
  Status status;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.size() < 5 || name.substr(name.size() - 4) != ".pub") continue;
    std::string line, raw;
    std::string path = dir + "/" + name;
    if (!ReadFirstLine(path, &line) ||
        !Base64Decode(line, sodium_base64_VARIANT_ORIGINAL, &raw) ||
        raw.size() != 32) {
      status =
          Status(ErrorCode::kBadData, path + ": not an Ed25519 public key");
      break;
    }
    std::array<uint8_t, 32> key;
    std::memcpy(key.data(), raw.data(), 32);
    keys[KeyIdOf(key)] = key;
  }
  ::closedir(d);
  if (!status.ok()) return status;
  if (keys.empty()) {
    return Status(ErrorCode::kNotFound, dir + ": no token keys (*.pub)");
  }
  keys_ = std::move(keys);
  return Status::Ok();
}

Status TokenVerifier::Verify(const std::string& token, uint64_t now_s,
                             TokenClaims* claims) const {
  const size_t prefix = sizeof(kTokenPrefix) - 1;
  if (token.size() > kMaxTokenBytes ||
      token.compare(0, prefix, kTokenPrefix) != 0) {
    return Status(ErrorCode::kTokenMalformed, "not a natter token");
  }
  size_t dot = token.find('.', prefix);
  if (dot == std::string::npos) {
    return Status(ErrorCode::kTokenMalformed, "token has no signature");
  }
  std::string body, sig;
  if (!Base64UrlDecode(token.substr(prefix, dot - prefix), &body) ||
      !Base64UrlDecode(token.substr(dot + 1), &sig) ||
      sig.size() != crypto_sign_BYTES) {
    return Status(ErrorCode::kTokenMalformed, "token is not base64url");
  }
  TokenClaims c;
  try {
    size_t offset = 0;
    msgpack::object_handle h =
        msgpack::unpack(body.data(), body.size(), offset, nullptr, nullptr,
                        msgpack::unpack_limit(8, 0, 256, 0, 0, 2));
    if (offset != body.size()) throw std::runtime_error("trailing bytes");
    h.get().convert(c);
  } catch (const std::exception&) {
    return Status(ErrorCode::kTokenMalformed, "token claims are undecodable");
  }
  auto key = keys_.find(c.key_id);
  if (key == keys_.end()) {
    // The key id is anyone's bytes: named only when it could be one.
    bool named = IsPlainWord(c.key_id) && c.key_id.size() <= 16;
    return Status(ErrorCode::kTokenUnknownKey,
                  named ? "token signed by unknown key " + c.key_id
                        : std::string("token signed by an unknown key"));
  }
  if (crypto_sign_verify_detached(reinterpret_cast<const uint8_t*>(sig.data()),
                                  reinterpret_cast<const uint8_t*>(body.data()),
                                  body.size(), key->second.data()) != 0) {
    return Status(ErrorCode::kTokenBadSignature, "token signature is invalid");
  }
  if (c.user.value == 0) {
    return Status(ErrorCode::kTokenMalformed, "token names no user");
  }
  if (c.expires + kTokenClockSkew <= now_s) {
    return Status(ErrorCode::kTokenExpired, "token expired");
  }
  if (c.issued > now_s + kTokenClockSkew) {
    return Status(ErrorCode::kTokenMalformed, "token issued in the future");
  }
  *claims = c;
  return Status::Ok();
}

}  // namespace natter
