// libFuzzer: an access token as frontd checks it.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/token.h"

using namespace natter;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static TokenVerifier* verifier = [] {
    auto* v = new TokenVerifier;
    SigningKey key = GenerateSigningKey();
    v->AddKey(key.id, key.public_key);
    return v;
  }();
  TokenClaims claims;
  std::string token(reinterpret_cast<const char*>(data), size);
  verifier->Verify(token, 1800000000, &claims);
  // Also past the prefix, where the base64 and MessagePack decoders are.
  verifier->Verify("nt1." + token, 1800000000, &claims);
  return 0;
}
