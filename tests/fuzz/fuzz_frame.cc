// libFuzzer: a frame from the network, as every daemon and the client
// decode it — the frame, its body as the struct its type names
// (VisitBody), and its body as every struct of the list, whatever the type
// says: each strict decoder must reject or accept, never crash.
#include <cstddef>
#include <cstdint>

#include "common/proto.h"
#include "common/validate.h"

using namespace natter;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The same bytes as a shard's batch of events, as notifyd walks it.
  ForEachBatchEntry(std::string_view(reinterpret_cast<const char*>(data), size),
                    [](std::string_view topic, std::string_view frame) {
                      Header h;
                      if (topic.size() != 8) __builtin_trap();
                      PeekHeader(frame.data(), frame.size(), &h);
                    });
  Frame f;
  if (!DecodeFrame(data, size, &f).ok()) return 0;
  VisitBody(f, [](const auto& body) {
    using Body = std::decay_t<decltype(body)>;
    if constexpr (std::is_same_v<Body, Send>) ValidateSend(body);
    if constexpr (std::is_same_v<Body, React>) ValidateReact(body);
    if constexpr (std::is_same_v<Body, Event>) {
      body.id();
      body.peer();
    }
    return Status::Ok();
  });
#define NATTER_X(name, number, text, Body)                      \
  {                                                             \
    f.header.type = number;                                     \
    Body body;                                                  \
    if (DecodeBody(f, &body).ok()) EncodeFrame(f.header, body); \
  }
  NATTER_FRAME_TYPES(NATTER_X)
#undef NATTER_X
  ValidateDevice(f.header.device);
  return 0;
}
