// libFuzzer: values read from a shard's disk, as the shard decodes them.
#include <cstddef>
#include <cstdint>
#include <string>

#include "daemons/stored/store.h"

using namespace natter;
using namespace natter::stored;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  StoredMessage message;
  UnpackValue(bytes, &message);
  ChatRecord chat;
  UnpackValue(bytes, &chat);
  SendRecord send;
  UnpackValue(bytes, &send);
  Event event;
  UnpackValue(bytes, &event);
  Handoff handoff;
  UnpackValue(bytes, &handoff);
  MessageRef ref;
  UnpackValue(bytes, &ref);
  UnpackMailboxEntry(bytes, &event, &ref);
  return 0;
}
