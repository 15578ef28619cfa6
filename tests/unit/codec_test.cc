#include <catch2/catch.hpp>

#include "common/proto.h"

using namespace natter;

namespace {

Header MakeHeader(MsgType type, uint64_t corr = 7) {
  Header h;
  h.type = static_cast<uint8_t>(type);
  h.corr = corr;
  h.user = UserId(42);
  h.device = "phone";
  return h;
}

Status Decode(const std::string& bytes, Frame* f) {
  return DecodeFrame(bytes.data(), bytes.size(), f);
}

// A chats reply as natter-stored sent it before `more`.
struct OldChatsReply {
  std::vector<ChatItem> chats;
  MSGPACK_DEFINE_ARRAY(chats);
};

}  // namespace

TEST_CASE("a send frame survives encoding and decoding unchanged") {
  Send send;
  send.client_msg_id = "abc";
  send.to = UserId(99);
  send.text = "héllo 👋";
  std::string bytes = EncodeFrame(MakeHeader(MsgType::kSend), send);
  Frame f;
  REQUIRE(Decode(bytes, &f).ok());
  CHECK(f.type() == MsgType::kSend);
  CHECK(f.header.corr == 7);
  CHECK(f.header.user == UserId(42));
  CHECK(f.header.device == "phone");
  Send back;
  REQUIRE(DecodeBody(f, &back).ok());
  CHECK(back.client_msg_id == "abc");
  CHECK(back.to == UserId(99));
  CHECK(back.text == send.text);
}

TEST_CASE("an event keeps every field, a missing emoji stays missing") {
  Event ev;
  ev.user = UserId(1);
  ev.seq = Seq(1000000);
  ev.kind = static_cast<uint8_t>(EventKind::kMessage);
  ev.id = MessageId(0xFFFFFFFFFFFFFFF0ULL);  // beyond 2^53
  ev.from = UserId(2);
  ev.to = UserId(1);
  ev.ts = 1795805458278ULL;
  ev.text = "x";
  ev.client_msg_id = "c";
  ev.origin_device = "d";
  Frame f;
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kEvent), ev), &f).ok());
  Event back;
  REQUIRE(DecodeBody(f, &back).ok());
  CHECK(back.id == ev.id);
  CHECK(back.seq == ev.seq);
  CHECK(back.ts == ev.ts);
  CHECK(back.origin_device == "d");
  CHECK_FALSE(back.emoji.has_value());
  ev.emoji = "👍";
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kEvent), ev), &f).ok());
  REQUIRE(DecodeBody(f, &back).ok());
  CHECK(back.emoji == std::optional<std::string>("👍"));
}

TEST_CASE("a sync reply with many events round-trips") {
  SyncReply r;
  for (uint64_t i = 1; i <= 500; ++i) {
    Event e;
    e.seq = Seq(i);
    e.text = std::string(100, 'a');
    r.events.push_back(e);
  }
  r.head = Seq(900);
  r.more = true;
  Frame f;
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kSyncReply), r), &f).ok());
  SyncReply back;
  REQUIRE(DecodeBody(f, &back).ok());
  CHECK(back.events.size() == 500);
  CHECK(back.events.back().seq == Seq(500));
  CHECK(back.head == Seq(900));
  CHECK(back.more);
}

TEST_CASE("malformed bytes are rejected, never crash") {
  Frame f;
  SECTION("empty") { CHECK(Decode("", &f).code() == ErrorCode::kMalformed); }
  SECTION("not MessagePack") {
    CHECK(Decode("\xc1\xc1\xc1", &f).code() == ErrorCode::kMalformed);
  }
  SECTION("a truncated frame") {
    std::string bytes = EncodeFrame(MakeHeader(MsgType::kSend), Send());
    for (size_t n = 0; n + 1 < bytes.size(); ++n) {
      CHECK_FALSE(Decode(bytes.substr(0, n), &f).ok());
    }
  }
  SECTION("trailing bytes") {
    std::string bytes = EncodeFrame(MakeHeader(MsgType::kPing), Empty()) + "x";
    CHECK(Decode(bytes, &f).code() == ErrorCode::kMalformed);
  }
  SECTION("another protocol version") {
    Header h = MakeHeader(MsgType::kPing);
    h.version = kProtocolVersion + 1;
    CHECK(Decode(EncodeFrame(h, Empty()), &f).code() == ErrorCode::kMalformed);
  }
  SECTION("a frame that is not [header, body]") {
    msgpack::sbuffer b;
    msgpack::pack(b, std::vector<int>{1, 2, 3});
    CHECK(Decode(std::string(b.data(), b.size()), &f).code() ==
          ErrorCode::kMalformed);
  }
  SECTION("a few bytes claiming a four-billion-element array") {
    CHECK(Decode(std::string("\xdd\xff\xff\xff\xff", 5), &f).code() ==
          ErrorCode::kMalformed);
  }
  SECTION("a body of the wrong shape") {
    std::string bytes = EncodeFrame(MakeHeader(MsgType::kSend), Ack());
    REQUIRE(Decode(bytes, &f).ok());
    Send s;
    CHECK(DecodeBody(f, &s).code() == ErrorCode::kMalformed);
  }
  SECTION("a string where a user id belongs") {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> p(b);
    p.pack_array(2);
    p.pack(MakeHeader(MsgType::kSend));
    p.pack_array(3);
    p.pack(std::string("id"));
    p.pack(std::string("not a number"));
    p.pack(std::string("text"));
    REQUIRE(Decode(std::string(b.data(), b.size()), &f).ok());
    Send s;
    CHECK(DecodeBody(f, &s).code() == ErrorCode::kMalformed);
  }
}

TEST_CASE("chats and its reply decode without their optional trailing elements") {
  // An older client's chats request is [] (the newest page); an older
  // shard's reply has no `more`.
  Frame f;
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kChats), Empty()), &f).ok());
  Chats q;
  REQUIRE(DecodeBody(f, &q).ok());
  CHECK(q.before_id == MessageId(UINT64_MAX));
  CHECK(q.before_peer == UserId(UINT64_MAX));

  OldChatsReply old;
  old.chats.resize(2);
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kChatsReply), old), &f).ok());
  ChatsReply reply;
  REQUIRE(DecodeBody(f, &reply).ok());
  CHECK(reply.chats.size() == 2);
  CHECK_FALSE(reply.more);
}

TEST_CASE("EncodedSize counts what EncodeFrame writes") {
  Event ev;
  ev.text = std::string(5000, 'y');
  ev.emoji = "👍";
  Header h = MakeHeader(MsgType::kEvent);
  CHECK(EncodedSize(h) + EncodedSize(ev) + 1 == EncodeFrame(h, ev).size());
}
