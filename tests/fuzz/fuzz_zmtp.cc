// libFuzzer: a client's bytes as frontd's ZMTP server reads them (greeting,
// handshake commands, frames), with the NULL and the CURVE mechanism, fed
// whole and in pieces.  It must refuse or go on, never crash, and never
// take a message longer than its limit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "daemons/frontd/zmtp.h"

using namespace natter;
using namespace natter::frontd;

namespace {

// A NULL client's greeting and READY, so that the fuzzer reaches frames.
std::string NullPrelude() {
  std::string out;
  ZmtpServer(ZmtpServer::Options()).Start(&out);
  const std::string ready(
      "\x05READY\x0bSocket-Type\0\0\0\x06"
      "DEALER",
      28);
  out += '\x04';
  out += static_cast<char>(ready.size());
  out += ready;
  return out;
}

void Run(const ZmtpServer::Options& options, const std::string& prelude,
         std::string_view data) {
  ZmtpServer z(options);
  std::string out;
  z.Start(&out);
  std::vector<ZmtpMessage> messages;
  if (!prelude.empty() && !z.Feed(prelude, &out, &messages)) std::abort();
  // The first byte says where to cut the rest in two.
  size_t cut = data.empty() ? 0 : static_cast<uint8_t>(data[0]) % (data.size());
  for (std::string_view piece : {data.substr(0, cut), data.substr(cut)}) {
    if (!z.Feed(piece, &out, &messages)) break;
    if (z.ready()) z.Encode(piece.substr(0, 64), &out);
  }
  for (const ZmtpMessage& m : messages) {
    if (m.body.size() > options.max_message) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string prelude = NullPrelude();
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ZmtpServer::Options null_options;
  null_options.max_message = 1024;
  Run(null_options, "", bytes);
  Run(null_options, prelude, bytes);
  ZmtpServer::Options curve;
  curve.identity.enabled = true;
  curve.identity.secret.fill(7);
  curve.identity.public_key.fill(9);
  Run(curve, "", bytes);
  return 0;
}
