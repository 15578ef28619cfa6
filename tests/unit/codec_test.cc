#include <catch2/catch.hpp>
#include <set>
#include <tuple>

#include "common/proto.h"
#include "common/text.h"

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

// [header, body] as given, type and all: for frames EncodeFrame would not
// make (a body under another type's header, a header of another shape).
template <typename H, typename B>
std::string Raw(const H& header, const B& body) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> p(b);
  p.pack_array(2);
  p.pack(header);
  p.pack(body);
  return std::string(b.data(), b.size());
}

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

TEST_CASE(
    "an event keeps every field of its kind, a missing emoji stays missing") {
  Message m;
  m.id = MessageId(0xFFFFFFFFFFFFFFF0ULL);  // beyond 2^53
  m.from = UserId(2);
  m.to = UserId(1);
  m.ts = 1795805458278ULL;
  m.text = "x";
  m.client_msg_id = "c";
  Event ev{UserId(1), Seq(1000000), "d", MessageEvent{m}};
  Frame f;
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kEvent), ev), &f).ok());
  Event back;
  REQUIRE(DecodeBody(f, &back).ok());
  REQUIRE(back.message() != nullptr);
  CHECK(back.kind() == EventKind::kMessage);
  CHECK(back.id() == m.id);
  CHECK(back.seq == ev.seq);
  CHECK(back.message()->ts == m.ts);
  CHECK(back.message()->text == "x");
  CHECK(back.message()->client_msg_id == "c");
  CHECK(back.origin_device == "d");

  Event reaction{UserId(1), Seq(7), "",
                 ReactionEvent{m.id, m.from, m.to, UserId(2), std::nullopt}};
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kEvent), reaction), &f).ok());
  REQUIRE(DecodeBody(f, &back).ok());
  REQUIRE(back.reaction() != nullptr);
  CHECK_FALSE(back.reaction()->emoji.has_value());
  CHECK(back.reaction()->by == UserId(2));
  CHECK(back.peer() == UserId(2));
  std::get<ReactionEvent>(reaction.what).emoji = "👍";
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kEvent), reaction), &f).ok());
  REQUIRE(DecodeBody(f, &back).ok());
  CHECK(back.reaction()->emoji == std::optional<std::string>("👍"));

  Event seen{UserId(2), Seq(8), "",
             SeenEvent{{m.id, UserId(2), UserId(1), UserId(1)}}};
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kEvent), seen), &f).ok());
  REQUIRE(DecodeBody(f, &back).ok());
  CHECK(back.kind() == EventKind::kSeen);
  REQUIRE(back.receipt() != nullptr);
  CHECK(back.receipt()->by == UserId(1));
  CHECK(back.id() == m.id);
}

TEST_CASE("a sync reply with many events round-trips") {
  SyncReply r;
  for (uint64_t i = 1; i <= 500; ++i) {
    Message m;
    m.text = std::string(100, 'a');
    r.events.push_back(Event{UserId(1), Seq(i), "", MessageEvent{m}});
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
    std::string bytes = EncodeFrame(MakeHeader(MsgType::kPing), Ping()) + "x";
    CHECK(Decode(bytes, &f).code() == ErrorCode::kMalformed);
  }
  SECTION("another protocol version") {
    Header h = MakeHeader(MsgType::kPing);
    h.version = kProtocolVersion + 1;
    CHECK(Decode(Raw(h, Ping()), &f).code() == ErrorCode::kMalformed);
    h.version = 0;
    CHECK(Decode(Raw(h, Ping()), &f).code() == ErrorCode::kMalformed);
    // The daemons still read 1 (a Raft log from before 2).
    h.version = kOldestProtocolVersion;
    CHECK(Decode(Raw(h, Ping()), &f).ok());
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
    std::string bytes = Raw(MakeHeader(MsgType::kSend), Ack());
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

TEST_CASE(
    "chats and its reply decode without their optional trailing elements") {
  // An older client's chats request is [] (the newest page); an older
  // shard's reply has no `more`.
  Frame f;
  REQUIRE(
      Decode(Raw(MakeHeader(MsgType::kChats), std::vector<int>()), &f).ok());
  Chats q;
  REQUIRE(DecodeBody(f, &q).ok());
  CHECK(q.before_id == MessageId(UINT64_MAX));
  CHECK(q.before_peer == UserId(UINT64_MAX));

  OldChatsReply old;
  old.chats.resize(2);
  REQUIRE(Decode(Raw(MakeHeader(MsgType::kChatsReply), old), &f).ok());
  ChatsReply reply;
  REQUIRE(DecodeBody(f, &reply).ok());
  CHECK(reply.chats.size() == 2);
  CHECK_FALSE(reply.more);
}

TEST_CASE("EncodedSize counts what EncodeFrame writes") {
  Message m;
  m.text = std::string(5000, 'y');
  Event ev{UserId(1), Seq(2), "", MessageEvent{m}};
  Header h = MakeHeader(MsgType::kEvent);
  CHECK(EncodedSize(h) + EncodedSize(ev) + 1 == EncodeFrame(h, ev).size());
}

// Strict decoding (natter(7)): a body with missing or extra elements, a
// header with more or fewer fields than its own, an element of the wrong
// type, an unknown type or enum value: malformed, with the corr of a
// header that could be read.
TEST_CASE(
    "decoding is strict: the shape, the types and the values of every "
    "element") {
  Frame f;
  Header h = MakeHeader(MsgType::kSend, 42);
  SECTION("a body with an element missing or one too many") {
    REQUIRE(Decode(Raw(h, std::make_tuple(std::string("c"), 5u)), &f).ok());
    Send s;
    Status st = DecodeBody(f, &s);
    CHECK(st.code() == ErrorCode::kMalformed);
    CHECK(st.message().find("3 elements") != std::string::npos);
    REQUIRE(Decode(Raw(h, std::make_tuple(std::string("c"), 5u,
                                          std::string("t"), 1u)),
                   &f)
                .ok());
    CHECK(DecodeBody(f, &s).code() == ErrorCode::kMalformed);
    CHECK(f.header.corr == 42);
  }
  SECTION("an element of the wrong type, named in the error") {
    // The text as binary, not a string; the recipient negative.
    msgpack::type::raw_ref bin("x", 1);
    REQUIRE(
        Decode(Raw(h, std::make_tuple(std::string("c"), 5u, bin)), &f).ok());
    Send s;
    Status st = DecodeBody(f, &s);
    CHECK(st.code() == ErrorCode::kMalformed);
    CHECK(st.message().find("text") != std::string::npos);
    REQUIRE(
        Decode(Raw(h, std::make_tuple(std::string("c"), -5, std::string("t"))),
               &f)
            .ok());
    CHECK(DecodeBody(f, &s).code() == ErrorCode::kMalformed);
    // A boolean where a number belongs, a number where a boolean does.
    Header hs = MakeHeader(MsgType::kSync, 9);
    REQUIRE(Decode(Raw(hs, std::make_tuple(1, 0u, 10u)), &f).ok());
    Sync sync;
    CHECK(DecodeBody(f, &sync).code() == ErrorCode::kMalformed);
    // A number past its field's width.
    REQUIRE(
        Decode(Raw(hs, std::make_tuple(true, 0u, uint64_t{1} << 33)), &f).ok());
    CHECK(DecodeBody(f, &sync).code() == ErrorCode::kMalformed);
  }
  SECTION(
      "a header of five elements (no trace) is read; four or seven are not") {
    auto five =
        std::make_tuple(kProtocolVersion, static_cast<uint8_t>(MsgType::kPing),
                        7u, 0u, std::string());
    REQUIRE(Decode(Raw(five, std::vector<int>()), &f).ok());
    CHECK(f.header.corr == 7);
    CHECK(f.header.trace == 0);
    auto four = std::make_tuple(kProtocolVersion,
                                static_cast<uint8_t>(MsgType::kPing), 7u, 0u);
    CHECK(Decode(Raw(four, std::vector<int>()), &f).code() ==
          ErrorCode::kMalformed);
    CHECK(f.header.corr == 0);  // the header itself was unreadable
    auto seven =
        std::make_tuple(kProtocolVersion, static_cast<uint8_t>(MsgType::kPing),
                        7u, 0u, std::string(), 0u, 0u);
    CHECK(Decode(Raw(seven, std::vector<int>()), &f).code() ==
          ErrorCode::kMalformed);
  }
  SECTION("a type not in the list is malformed, the corr kept") {
    Header odd = MakeHeader(MsgType::kPing, 77);
    odd.type = 99;
    CHECK(Decode(Raw(odd, std::vector<int>()), &f).code() ==
          ErrorCode::kMalformed);
    CHECK(f.header.corr == 77);
  }
  SECTION("an unknown history mode or event kind") {
    Header hh = MakeHeader(MsgType::kHistory, 3);
    REQUIRE(Decode(Raw(hh, std::make_tuple(5u, 4u, 0u, 10u)), &f).ok());
    History q;
    CHECK(DecodeBody(f, &q).code() == ErrorCode::kMalformed);
    REQUIRE(Decode(Raw(hh, std::make_tuple(5u, 3u, 0u, 10u)), &f).ok());
    CHECK(DecodeBody(f, &q).ok());
    CHECK(q.mode == HistoryMode::kAfter);
  }
  SECTION("an event whose fields do not fit its kind") {
    Header he = MakeHeader(MsgType::kEvent);
    // A reaction with a text; a message with an emoji.
    REQUIRE(
        Decode(Raw(he, std::make_tuple(1u, 1u, 2u, 9u, 1u, 2u, 0u,
                                       std::string("x"), std::string(),
                                       std::string(), 2u, std::string("👍"))),
               &f)
            .ok());
    Event e;
    CHECK(DecodeBody(f, &e).code() == ErrorCode::kMalformed);
    REQUIRE(
        Decode(Raw(he, std::make_tuple(1u, 1u, 1u, 9u, 1u, 2u, 5u,
                                       std::string("x"), std::string("c"),
                                       std::string(), 0u, std::string("👍"))),
               &f)
            .ok());
    CHECK(DecodeBody(f, &e).code() == ErrorCode::kMalformed);
  }
  SECTION("a body decoded as another type's struct") {
    REQUIRE(Decode(EncodeFrame(h, Ack()), &f).ok());
    Send s;
    CHECK(DecodeBody(f, &s).code() == ErrorCode::kMalformed);
  }
}

TEST_CASE("VisitBody decodes a body as the struct its type names") {
  Frame f;
  React react{UserId(3), MessageId(4), std::string("👍")};
  REQUIRE(Decode(EncodeFrame(MakeHeader(MsgType::kReact), react), &f).ok());
  std::string seen;
  Status s = VisitBody(f, [&](const auto& body) {
    using B = std::decay_t<decltype(body)>;
    seen = MsgTypeName(FrameOf<B>::kType);
    if constexpr (std::is_same_v<B, React>) {
      CHECK(body.peer == UserId(3));
      CHECK(body.emoji == std::optional<std::string>("👍"));
    }
    return Status::Ok();
  });
  CHECK(s.ok());
  CHECK(seen == "react");
}

TEST_CASE("every frame type has its number and name, once") {
  std::set<std::string> names;
  std::set<int> numbers;
#define NATTER_X(name, number, text, Body)                   \
  CHECK(static_cast<int>(FrameOf<Body>::kType) == (number)); \
  CHECK(std::string(MsgTypeName(MsgType::name)) == (text));  \
  CHECK(names.insert(text).second);                          \
  CHECK(numbers.insert(number).second);
  NATTER_FRAME_TYPES(NATTER_X)
#undef NATTER_X
  CHECK_FALSE(IsKnownType(0));
  CHECK_FALSE(IsKnownType(200));
  CHECK(IsKnownType(129));
  CHECK(std::string(MsgTypeName(MsgType::kHandoff)) == "handoff");
}

// natter(7), "Worked example": the bytes a client in another language is
// written against.
TEST_CASE("natter(7)'s worked example is byte for byte what the codec writes") {
  auto hex = [](const std::string& b) {
    return ToHex(reinterpret_cast<const uint8_t*>(b.data()), b.size());
  };
  Header h;
  h.corr = 1;
  h.type = static_cast<uint8_t>(MsgType::kHello);
  CHECK(hex(EncodeFrame(h, Hello{"nt1.x.y", "phone"})) ==
        "92"
        "96020101"
        "00a000"
        "92a76e74312e782e79a570686f6e65");
  h.corr = 2;
  h.type = static_cast<uint8_t>(MsgType::kSend);
  CHECK(hex(EncodeFrame(h, Send{"c1", UserId(2), "hi"})) ==
        "929602020200a000"
        "93a2633102a26869");
  Header from_frontd = h;
  from_frontd.user = UserId(1);
  from_frontd.device = "phone";
  Processed p;
  p.id = MessageId(384778143468093440ull);
  p.client_msg_id = "c1";
  p.to = UserId(2);
  p.ts = 1795805458235ull;
  p.seq = Seq(7);
  CHECK(hex(EncodeReply(from_frontd, p)) ==
        "92960241"
        "0201a570686f6e6500"
        "95cf055701aecec00000a2633102"
        "cf000001a21e58af3b07");
}

TEST_CASE(
    "a shard's batch of events comes apart into its topics and frames, and a "
    "damaged one stops at the fault") {
  const std::string one = EncodeFrame(MakeHeader(MsgType::kPing), Ping());
  const std::string two(300, 'x');
  std::string batch;
  AppendBatchEntry(&batch, 7, one);
  AppendBatchEntry(&batch, 1, two);
  std::vector<std::pair<std::string, std::string>> got;
  auto take = [&got](std::string_view topic, std::string_view frame) {
    got.emplace_back(topic, frame);
  };
  CHECK(ForEachBatchEntry(batch, take));
  REQUIRE(got.size() == 2);
  CHECK(got[0].first == TopicOf(UserId(7)));
  CHECK(got[0].second == one);
  CHECK(got[1].first == TopicOf(UserId(1)));
  CHECK(got[1].second == two);
  CHECK(ForEachBatchEntry("", take));
  // Cut anywhere inside the second entry: the first is taken, then false.
  const size_t second = 4 + 8 + one.size();
  for (size_t cut = second + 1; cut < batch.size(); cut += 37) {
    got.clear();
    CHECK_FALSE(
        ForEachBatchEntry(std::string_view(batch).substr(0, cut), take));
    CHECK(got.size() == 1);
  }
  // A length too short to hold a topic.
  got.clear();
  CHECK_FALSE(ForEachBatchEntry(std::string("\0\0\0\3abc", 7), take));
  CHECK(got.empty());
}
