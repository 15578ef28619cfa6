// libFuzzer: a frame from the network, as every daemon and the client
// decode it — the frame, then its body as each type it could claim to be.
#include <cstddef>
#include <cstdint>

#include "common/proto.h"
#include "common/validate.h"

using namespace natter;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Frame f;
  if (!DecodeFrame(data, size, &f).ok()) return 0;
  // Each decoder must reject or accept, never crash, whatever the type says.
  Hello hello;
  DecodeBody(f, &hello);
  Send send;
  if (DecodeBody(f, &send).ok()) ValidateSend(send);
  Sync sync;
  DecodeBody(f, &sync);
  Ack ack;
  DecodeBody(f, &ack);
  React react;
  if (DecodeBody(f, &react).ok()) ValidateReact(react);
  MarkSeen seen;
  DecodeBody(f, &seen);
  History history;
  DecodeBody(f, &history);
  Welcome welcome;
  DecodeBody(f, &welcome);
  Processed processed;
  DecodeBody(f, &processed);
  SyncReply sync_reply;
  DecodeBody(f, &sync_reply);
  HistoryReply history_reply;
  DecodeBody(f, &history_reply);
  ChatsReply chats;
  DecodeBody(f, &chats);
  Error error;
  DecodeBody(f, &error);
  Done done;
  DecodeBody(f, &done);
  Event event;
  DecodeBody(f, &event);
  StoreMessage store;
  DecodeBody(f, &store);
  Deliver deliver;
  DecodeBody(f, &deliver);
  DeliverAck deliver_ack;
  DecodeBody(f, &deliver_ack);
  ValidateDevice(f.header.device);
  return 0;
}
