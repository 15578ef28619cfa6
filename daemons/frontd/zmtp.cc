#include "daemons/frontd/zmtp.h"

#include <sodium.h>

#include <cstring>

#include "common/endian.h"

namespace natter {
namespace frontd {
namespace {

constexpr size_t kGreetingSize = 64;
// Frame flags (RFC 23); the other bits are reserved and must be zero.
constexpr uint8_t kMore = 0x01;
constexpr uint8_t kLong = 0x02;
constexpr uint8_t kCommand = 0x04;
constexpr uint8_t kReservedFlags = 0xf8;
// The flags inside a CURVE MESSAGE box.
constexpr uint8_t kBoxMore = 0x01;
constexpr uint8_t kBoxCommand = 0x02;
// The longest handshake command taken: INITIATE with its metadata.
constexpr size_t kMaxHandshakeCommand = 8192;
static_assert(ZmtpServer::kMaxHandshakeBytes ==
              kGreetingSize + 2 * (kMaxHandshakeCommand + 9));
// What a CURVE MESSAGE adds to its payload: name, nonce, MAC, flags.
constexpr size_t kMessageOverhead = 8 + 8 + crypto_box_MACBYTES + 1;
// RFC 37: a PING's context is at most 16 bytes.
constexpr size_t kMaxPingContext = 16;

std::string_view View(const uint8_t* p, size_t n) {
  return std::string_view(reinterpret_cast<const char*>(p), n);
}

const uint8_t* Bytes(std::string_view s) {
  return reinterpret_cast<const uint8_t*>(s.data());
}

// A full 24-byte nonce: a 16-byte prefix and an 8-byte big-endian counter,
// or an 8-byte prefix and 16 bytes given.
void MakeNonce(const char* prefix16, uint64_t counter, uint8_t out[24]) {
  std::memcpy(out, prefix16, 16);
  std::string be;
  PutBigEndian(&be, counter);
  std::memcpy(out + 16, be.data(), 8);
}

void MakeLongNonce(const char* prefix8, const uint8_t* rest16,
                   uint8_t out[24]) {
  std::memcpy(out, prefix8, 8);
  std::memcpy(out + 8, rest16, 16);
}

void AppendFrameHeader(uint8_t flags, size_t size, std::string* out) {
  if (size > 255) {
    out->push_back(static_cast<char>(flags | kLong));
    PutBigEndian(out, size);
  } else {
    out->push_back(static_cast<char>(flags));
    out->push_back(static_cast<char>(size));
  }
}

void AppendCommandFrame(std::string_view body, std::string* out) {
  AppendFrameHeader(kCommand, body.size(), out);
  out->append(body);
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

void AppendProperty(std::string_view name, std::string_view value,
                    std::string* out) {
  out->push_back(static_cast<char>(name.size()));
  out->append(name);
  PutBigEndian(out, value.size(), 4);
  out->append(value);
}

}  // namespace

ZmtpServer::ZmtpServer(const Options& options)
    : options_(options), curve_(options.identity.enabled) {}

ZmtpServer::~ZmtpServer() {
  sodium_memzero(server_short_secret_.data(), server_short_secret_.size());
  sodium_memzero(cookie_key_.data(), cookie_key_.size());
  sodium_memzero(precomputed_.data(), precomputed_.size());
}

void ZmtpServer::Start(std::string* out) {
  // signature (0xff, 8 bytes of padding, 0x7f), version 3.1, mechanism,
  // as-server, filler.
  out->push_back('\xff');
  out->append(8, '\0');
  out->push_back('\x7f');
  out->push_back('\x03');
  out->push_back('\x01');
  std::string mechanism(20, '\0');
  const char* name = curve_ ? "CURVE" : "NULL";
  std::memcpy(&mechanism[0], name, std::strlen(name));
  out->append(mechanism);
  out->push_back(curve_ ? '\x01' : '\x00');
  out->append(31, '\0');
}

bool ZmtpServer::Fail(std::string why) {
  if (state_ != State::kFailed) error_ = std::move(why);
  state_ = State::kFailed;
  return false;
}

void ZmtpServer::Refuse(const std::string& reason) {
  if (state_ != State::kReady && state_ != State::kFailed) refusal_ = reason;
}

bool ZmtpServer::Feed(std::string_view bytes, std::string* out,
                      std::vector<ZmtpMessage>* messages) {
  if (state_ == State::kFailed) return false;
  in_.append(bytes);
  while (state_ != State::kFailed) {
    if (state_ == State::kGreeting) {
      if (!OnGreeting(out)) break;
      continue;
    }
    Frame frame;
    if (!NextFrame(&frame)) break;
    if (state_ == State::kReady) {
      OnFrame(frame, out, messages);
    } else {
      OnHandshake(frame, out);
    }
  }
  // The frames read may point into in_: only now is it safe to move it.
  in_.erase(0, in_pos_);
  in_pos_ = 0;
  return state_ != State::kFailed;
}

bool ZmtpServer::OnGreeting(std::string* out) {
  (void)out;
  const size_t avail = in_.size() - in_pos_;
  const uint8_t* g = Bytes(in_) + in_pos_;
  // Refuse what is not ZMTP 3 as soon as it shows.
  if (avail >= 1 && g[0] != 0xff)
    return Fail("not a ZMTP peer (no greeting signature)");
  if (avail >= 10 && (g[9] & 0x01) == 0)
    return Fail("not a ZMTP 3 peer (no greeting signature)");
  if (avail >= 11 && g[10] < 3) {
    return Fail("ZMTP " + std::to_string(g[10]) + " is older than 3");
  }
  if (avail < kGreetingSize) return false;
  minor_ = g[10] == 3 ? g[11] : 1;
  std::string expected(20, '\0');
  const char* name = curve_ ? "CURVE" : "NULL";
  std::memcpy(&expected[0], name, std::strlen(name));
  if (std::memcmp(g + 12, expected.data(), 20) != 0) {
    return Fail(std::string("the client's mechanism is not ") + name);
  }
  if (g[32] != 0) return Fail("the client says it is a server");
  in_pos_ += kGreetingSize;
  state_ = curve_ ? State::kHello : State::kNullReady;
  return true;
}

bool ZmtpServer::NextFrame(Frame* frame) {
  const size_t avail = in_.size() - in_pos_;
  if (avail < 2) return false;
  const char* p = in_.data() + in_pos_;
  const uint8_t flags = static_cast<uint8_t>(p[0]);
  if (flags & kReservedFlags)
    return Fail("a frame with reserved flag bits set");
  const size_t header = (flags & kLong) ? 9 : 2;
  if (avail < header) return false;
  const uint64_t size =
      (flags & kLong) ? GetBigEndian(p + 1) : static_cast<uint8_t>(p[1]);
  const uint64_t limit = state_ != State::kReady ? kMaxHandshakeCommand
                         : curve_ ? options_.max_message + kMessageOverhead
                                  : options_.max_message;
  if (size > limit) {
    return Fail("a frame of " + std::to_string(size) + " bytes (at most " +
                std::to_string(limit) + ")");
  }
  if (avail - header < size) return false;
  frame->more = (flags & kMore) != 0;
  frame->command = (flags & kCommand) != 0;
  frame->body = std::string_view(p + header, static_cast<size_t>(size));
  in_pos_ += header + static_cast<size_t>(size);
  return true;
}

bool ZmtpServer::OnHandshake(const Frame& frame, std::string* out) {
  if (!frame.command || frame.more)
    return Fail("a handshake frame that is not a command");
  const std::string_view body = frame.body;
  if (body.size() >= 6 && body.compare(0, 6,
                                       "\x05"
                                       "ERROR") == 0) {
    return Fail("the client gave up the handshake (ERROR)");
  }
  if (!refusal_.empty()) {
    SendError(out);
    return Fail("refused: " + refusal_);
  }
  switch (state_) {
    case State::kHello:
      return OnHello(body, out);
    case State::kInitiate:
      return OnInitiate(body, out);
    case State::kNullReady:
      return OnNullReady(body, out);
    default:
      return Fail("a handshake command out of turn");
  }
}

bool ZmtpServer::OnHello(std::string_view body, std::string* out) {
  // "\x05HELLO", version 1.0, 72 bytes of padding, C', nonce, Box[64 zero
  // bytes](C'->S).
  if (body.size() != 200 || body.compare(0, 6,
                                         "\x05"
                                         "HELLO") != 0) {
    return Fail("HELLO expected");
  }
  const uint8_t* h = Bytes(body);
  if (h[6] != 1 || h[7] != 0) return Fail("CURVE version other than 1.0");
  std::memcpy(client_short_.data(), h + 80, 32);
  client_nonce_ = GetBigEndian(body.data() + 112);
  uint8_t nonce[24];
  MakeNonce("CurveZMQHELLO---", client_nonce_, nonce);
  uint8_t zeros[64];
  if (crypto_box_open_easy(zeros, h + 120, 80, nonce, client_short_.data(),
                           options_.identity.secret.data()) != 0) {
    return Fail("HELLO does not open (the client has another server key)");
  }
  if (!sodium_is_zero(zeros, sizeof zeros))
    return Fail("HELLO's signature is not zero");

  // WELCOME: S' and a cookie Box[C' + s'](K), in Box[S' + cookie](S->C').
  crypto_box_keypair(server_short_.data(), server_short_secret_.data());
  randombytes_buf(cookie_key_.data(), cookie_key_.size());
  uint8_t cookie_nonce[24];
  uint8_t random16[16];
  randombytes_buf(random16, sizeof random16);
  MakeLongNonce("COOKIE--", random16, cookie_nonce);
  uint8_t cookie_plain[64];
  std::memcpy(cookie_plain, client_short_.data(), 32);
  std::memcpy(cookie_plain + 32, server_short_secret_.data(), 32);
  uint8_t welcome_plain[128];
  std::memcpy(welcome_plain, server_short_.data(), 32);
  std::memcpy(welcome_plain + 32, cookie_nonce + 8, 16);
  crypto_secretbox_easy(welcome_plain + 48, cookie_plain, sizeof cookie_plain,
                        cookie_nonce, cookie_key_.data());
  sodium_memzero(cookie_plain, sizeof cookie_plain);
  uint8_t welcome_nonce[24];
  randombytes_buf(random16, sizeof random16);
  MakeLongNonce("WELCOME-", random16, welcome_nonce);
  std::string welcome(
      "\x07"
      "WELCOME");
  welcome.append(reinterpret_cast<const char*>(welcome_nonce + 8), 16);
  welcome.resize(welcome.size() + sizeof welcome_plain + crypto_box_MACBYTES);
  if (crypto_box_easy(reinterpret_cast<uint8_t*>(&welcome[24]), welcome_plain,
                      sizeof welcome_plain, welcome_nonce, client_short_.data(),
                      options_.identity.secret.data()) != 0) {
    return Fail("the client's short-term key is weak");
  }
  AppendCommandFrame(welcome, out);
  state_ = State::kInitiate;
  return true;
}

bool ZmtpServer::OnInitiate(std::string_view body, std::string* out) {
  // "\x08INITIATE", cookie (16 + 80), nonce, Box[C + vouch + metadata](C'->S').
  if (body.size() < 257 || body.compare(0, 9,
                                        "\x08"
                                        "INITIATE") != 0) {
    return Fail("INITIATE expected");
  }
  const uint8_t* m = Bytes(body);
  uint8_t cookie_nonce[24];
  MakeLongNonce("COOKIE--", m + 9, cookie_nonce);
  uint8_t cookie[64];
  if (crypto_secretbox_open_easy(cookie, m + 25, 80, cookie_nonce,
                                 cookie_key_.data()) != 0 ||
      sodium_memcmp(cookie, client_short_.data(), 32) != 0 ||
      sodium_memcmp(cookie + 32, server_short_secret_.data(), 32) != 0) {
    sodium_memzero(cookie, sizeof cookie);
    return Fail("INITIATE's cookie is not ours");
  }
  sodium_memzero(cookie, sizeof cookie);
  const uint64_t short_nonce = GetBigEndian(body.data() + 105);
  if (short_nonce <= client_nonce_)
    return Fail("INITIATE's nonce did not grow");
  client_nonce_ = short_nonce;
  uint8_t nonce[24];
  MakeNonce("CurveZMQINITIATE", short_nonce, nonce);
  const size_t box_size = body.size() - 113;
  std::vector<uint8_t> plain(box_size - crypto_box_MACBYTES);
  if (crypto_box_open_easy(plain.data(), m + 113, box_size, nonce,
                           client_short_.data(),
                           server_short_secret_.data()) != 0) {
    return Fail("INITIATE does not open");
  }
  // C, then the vouch: a 16-byte nonce and Box[C' + S](C->S').
  uint8_t vouch_nonce[24];
  MakeLongNonce("VOUCH---", plain.data() + 32, vouch_nonce);
  uint8_t vouch[64];
  if (crypto_box_open_easy(vouch, plain.data() + 48, 80, vouch_nonce,
                           plain.data(), server_short_secret_.data()) != 0) {
    return Fail("INITIATE's vouch does not open");
  }
  if (sodium_memcmp(vouch, client_short_.data(), 32) != 0 ||
      sodium_memcmp(vouch + 32, options_.identity.public_key.data(), 32) != 0) {
    return Fail("INITIATE's vouch is for other keys");
  }
  if (!CheckMetadata(View(plain.data() + 128, plain.size() - 128)))
    return false;
  std::memcpy(client_key_.data(), plain.data(), 32);
  if (crypto_box_beforenm(precomputed_.data(), client_short_.data(),
                          server_short_secret_.data()) != 0) {
    return Fail("the client's short-term key is weak");
  }
  sodium_memzero(server_short_secret_.data(), server_short_secret_.size());
  sodium_memzero(cookie_key_.data(), cookie_key_.size());

  // READY: Box[metadata](S'->C').
  const std::string metadata = ReadyMetadata();
  MakeNonce("CurveZMQREADY---", next_nonce_, nonce);
  std::string ready(
      "\x05"
      "READY");
  PutBigEndian(&ready, next_nonce_++);
  ready.resize(ready.size() + metadata.size() + crypto_box_MACBYTES);
  crypto_box_easy_afternm(reinterpret_cast<uint8_t*>(&ready[14]),
                          Bytes(metadata), metadata.size(), nonce,
                          precomputed_.data());
  AppendCommandFrame(ready, out);
  state_ = State::kReady;
  return true;
}

bool ZmtpServer::OnNullReady(std::string_view body, std::string* out) {
  if (body.size() < 6 || body.compare(0, 6,
                                      "\x05"
                                      "READY") != 0) {
    return Fail("READY expected");
  }
  if (!CheckMetadata(body.substr(6))) return false;
  AppendCommandFrame(
      "\x05"
      "READY" +
          ReadyMetadata(),
      out);
  state_ = State::kReady;
  return true;
}

bool ZmtpServer::CheckMetadata(std::string_view metadata) {
  bool dealer = false;
  size_t i = 0;
  while (i < metadata.size()) {
    const size_t name_size = static_cast<uint8_t>(metadata[i]);
    if (name_size == 0 || metadata.size() - i < 1 + name_size + 4) {
      return Fail("malformed metadata");
    }
    const std::string_view name = metadata.substr(i + 1, name_size);
    const uint64_t value_size =
        GetBigEndian(metadata.data() + i + 1 + name_size, 4);
    i += 1 + name_size + 4;
    if (metadata.size() - i < value_size) return Fail("malformed metadata");
    const std::string_view value =
        metadata.substr(i, static_cast<size_t>(value_size));
    i += static_cast<size_t>(value_size);
    if (EqualsIgnoreCase(name, "Socket-Type")) dealer = value == "DEALER";
  }
  if (!dealer) return Fail("the client is not a DEALER socket");
  return true;
}

std::string ZmtpServer::ReadyMetadata() const {
  std::string md;
  AppendProperty("Socket-Type", "ROUTER", &md);
  AppendProperty("Identity", "", &md);
  return md;
}

void ZmtpServer::SendError(std::string* out) {
  std::string error(
      "\x05"
      "ERROR");
  const std::string reason = refusal_.substr(0, 255);
  error.push_back(static_cast<char>(reason.size()));
  error.append(reason);
  AppendCommandFrame(error, out);
}

bool ZmtpServer::OnFrame(const Frame& frame, std::string* out,
                         std::vector<ZmtpMessage>* messages) {
  if (!curve_)
    return OnPart(frame.more, frame.command, frame.body, out, messages);
  // "\x07MESSAGE", nonce, Box[flags + payload](C'->S'); the frame's own
  // flags say nothing.
  const std::string_view body = frame.body;
  if (body.size() < kMessageOverhead || body.compare(0, 8,
                                                     "\x07"
                                                     "MESSAGE") != 0) {
    return Fail("MESSAGE expected");
  }
  const uint64_t short_nonce = GetBigEndian(body.data() + 8);
  if (short_nonce <= client_nonce_)
    return Fail("a MESSAGE nonce that did not grow");
  client_nonce_ = short_nonce;
  uint8_t nonce[24];
  MakeNonce("CurveZMQMESSAGEC", short_nonce, nonce);
  std::string plain(body.size() - 16 - crypto_box_MACBYTES, '\0');
  if (crypto_box_open_easy_afternm(reinterpret_cast<uint8_t*>(&plain[0]),
                                   Bytes(body) + 16, body.size() - 16, nonce,
                                   precomputed_.data()) != 0) {
    return Fail("a MESSAGE that does not open");
  }
  const uint8_t flags = static_cast<uint8_t>(plain[0]);
  if (flags & ~(kBoxMore | kBoxCommand))
    return Fail("a MESSAGE with reserved flag bits set");
  return OnPart((flags & kBoxMore) != 0, (flags & kBoxCommand) != 0,
                std::string_view(plain).substr(1), out, messages);
}

bool ZmtpServer::OnPart(bool more, bool command, std::string_view payload,
                        std::string* out, std::vector<ZmtpMessage>* messages) {
  if (command) {
    if (partial_.frames != 0 || more) return Fail("a command inside a message");
    OnCommand(payload, out);
    return !failed();
  }
  if (payload.size() > options_.max_message - partial_.body.size()) {
    return Fail("a message of more than " +
                std::to_string(options_.max_message) + " bytes");
  }
  partial_.body.append(payload);
  ++partial_.frames;
  if (!more) {
    messages->push_back(std::move(partial_));
    partial_ = ZmtpMessage();
  }
  return true;
}

void ZmtpServer::OnCommand(std::string_view body, std::string* out) {
  const size_t name_size = body.empty() ? 0 : static_cast<uint8_t>(body[0]);
  if (name_size == 0 || body.size() < 1 + name_size) {
    Fail("a malformed command");
    return;
  }
  const std::string_view name = body.substr(1, name_size);
  const std::string_view data = body.substr(1 + name_size);
  if (name == "PING") {
    // A 2-byte TTL, then up to 16 bytes of context, echoed in the PONG.
    if (data.size() < 2 || data.size() > 2 + kMaxPingContext) {
      Fail("a malformed PING");
      return;
    }
    SendCommand(std::string("\x04"
                            "PONG")
                    .append(data.substr(2)),
                out);
  } else if (name == "ERROR") {
    Fail("the client sent ERROR");
  }
  // PONG shows the client is alive (the caller notes any bytes); other
  // commands (SUBSCRIBE, CANCEL, ones of later versions) mean nothing here.
}

void ZmtpServer::SendCommand(std::string_view body, std::string* out) {
  if (curve_) {
    Seal(kBoxCommand, body, out);
  } else {
    AppendCommandFrame(body, out);
  }
}

void ZmtpServer::Seal(uint8_t flags, std::string_view payload,
                      std::string* out) {
  uint8_t nonce[24];
  MakeNonce("CurveZMQMESSAGES", next_nonce_, nonce);
  std::string plain;
  plain.reserve(1 + payload.size());
  plain.push_back(static_cast<char>(flags));
  plain.append(payload);
  const size_t body_size = 16 + plain.size() + crypto_box_MACBYTES;
  AppendFrameHeader(0, body_size, out);
  out->append(
      "\x07"
      "MESSAGE",
      8);
  PutBigEndian(out, next_nonce_++);
  const size_t at = out->size();
  out->resize(at + plain.size() + crypto_box_MACBYTES);
  crypto_box_easy_afternm(reinterpret_cast<uint8_t*>(&(*out)[at]), Bytes(plain),
                          plain.size(), nonce, precomputed_.data());
}

void ZmtpServer::Encode(std::string_view message, std::string* out) {
  if (curve_) {
    Seal(0, message, out);
    return;
  }
  AppendFrameHeader(0, message.size(), out);
  out->append(message);
}

void ZmtpServer::Ping(uint16_t ttl_ds, std::string* out) {
  std::string ping(
      "\x04"
      "PING");
  PutBigEndian(&ping, ttl_ds, 2);
  SendCommand(ping, out);
}

}  // namespace frontd
}  // namespace natter
