// The server side of one client connection, speaking ZMTP 3.x (RFC 23, with
// RFC 37's PING and PONG) with the NULL or the CURVE (RFC 26) mechanism, as a
// state machine over bytes.  frontd reads each client's bytes from its
// connection (stream.h, which names every connection by an id of its own
// choosing, never the client's) and writes back what this says; nothing here
// touches a socket, so tests drive it with any bytes they like.
//
// Why not a ROUTER: a ROUTER takes the routing id a peer announces, and
// libzmq aborts when the id it generates for a later peer is one a client
// chose already.  Here a client's announced identity is read and ignored.
//
// Every byte from the peer is hostile until checked: the greeting, each
// command and each message are read whole or refused, sizes are checked
// before anything is buffered (a frame longer than max_message is a protocol
// error at once), and nonces must grow.  A refused connection is closed by
// the caller; error() says why.
//
// Not thread-safe; one per connection.
#ifndef NATTER_DAEMONS_FRONTD_ZMTP_H_
#define NATTER_DAEMONS_FRONTD_ZMTP_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/curve.h"

namespace natter {
namespace frontd {

// A whole message from the client: its frames joined, and how many there
// were (natter requests are one frame).
struct ZmtpMessage {
  std::string body;
  size_t frames = 0;
};

class ZmtpServer {
 public:
  struct Options {
    // The server's long-term keys; not enabled: the NULL mechanism.
    CurveIdentity identity;
    // The most bytes one message (all its frames) may have.
    size_t max_message = 16 * 1024;
  };

  // The most bytes a client sends before the handshake is done: the
  // greeting, HELLO and INITIATE (each command at most 8 KiB) with their
  // frame headers.
  static constexpr size_t kMaxHandshakeBytes = 64 + 2 * (8192 + 9);

  explicit ZmtpServer(const Options& options);
  ~ZmtpServer();
  ZmtpServer(const ZmtpServer&) = delete;
  ZmtpServer& operator=(const ZmtpServer&) = delete;

  // The server's greeting, to send as soon as the connection opens.
  void Start(std::string* out);

  // Takes bytes from the client: appends what to send back to out and each
  // whole message to messages.  False once the client has broken the
  // protocol (error() says how): close the connection.
  bool Feed(std::string_view bytes, std::string* out,
            std::vector<ZmtpMessage>* messages);

  // Refuses the client: its next handshake command is answered with an
  // ERROR command carrying reason (RFC 23; "300", "400" or "500" make
  // libzmq report a handshake refused with that status), after which Feed
  // fails.  Before the handshake is done only.
  void Refuse(const std::string& reason);

  // One message of one frame for the client.  After ready() only.
  void Encode(std::string_view message, std::string* out);
  // A heartbeat (RFC 37) asking the client to answer, and to drop the
  // connection if it hears nothing for ttl_ds tenths of a second (0: no
  // such request).  Only for clients that speak ZMTP 3.1 (heartbeats()).
  void Ping(uint16_t ttl_ds, std::string* out);

  bool ready() const { return state_ == State::kReady; }
  // CURVE: welcomed, INITIATE awaited (a handshake half done).
  bool welcomed() const { return state_ == State::kInitiate; }
  bool failed() const { return state_ == State::kFailed; }
  bool heartbeats() const { return minor_ >= 1; }
  // The client's long-term CURVE public key, after ready() (zero with NULL).
  const CurveKey& client_key() const { return client_key_; }
  const std::string& error() const { return error_; }

 private:
  enum class State {
    kGreeting,   // waiting for the client's 64-byte greeting
    kHello,      // CURVE: waiting for HELLO
    kInitiate,   // CURVE: waiting for INITIATE
    kNullReady,  // NULL: waiting for the client's READY
    kReady,
    kFailed,
  };
  struct Frame {
    bool more = false;
    bool command = false;
    std::string_view body;
  };

  bool Fail(std::string why);
  // Takes one whole frame off the front of in_; false when none is whole
  // yet (or the header is bad: state_ is then kFailed).
  bool NextFrame(Frame* frame);
  bool OnGreeting(std::string* out);
  bool OnHandshake(const Frame& frame, std::string* out);
  bool OnHello(std::string_view body, std::string* out);
  bool OnInitiate(std::string_view body, std::string* out);
  bool OnNullReady(std::string_view body, std::string* out);
  // The client's metadata (a DEALER, whatever identity it names).
  bool CheckMetadata(std::string_view metadata);
  bool OnFrame(const Frame& frame, std::string* out,
               std::vector<ZmtpMessage>* messages);
  // A frame's payload and flags after CURVE decryption (or as it came).
  bool OnPart(bool more, bool command, std::string_view payload,
              std::string* out, std::vector<ZmtpMessage>* messages);
  void OnCommand(std::string_view body, std::string* out);
  // A command (inside a MESSAGE box under CURVE) to the client.
  void SendCommand(std::string_view body, std::string* out);
  // Wraps payload in a MESSAGE box; flags are ZMTP's (1 more, 2 command).
  void Seal(uint8_t flags, std::string_view payload, std::string* out);
  void SendError(std::string* out);
  std::string ReadyMetadata() const;

  Options options_;
  bool curve_ = false;
  State state_ = State::kGreeting;
  std::string error_;
  std::string refusal_;
  uint8_t minor_ = 0;
  std::string in_;       // bytes not yet used
  size_t in_pos_ = 0;    // where the unread ones start in in_
  ZmtpMessage partial_;  // frames of a message still coming

  // CURVE state (RFC 26 names: C, C', S', s', the cookie key).
  CurveKey client_key_{};
  CurveKey client_short_{};
  CurveKey server_short_{};
  std::array<uint8_t, 32> server_short_secret_{};
  std::array<uint8_t, 32> cookie_key_{};
  std::array<uint8_t, 32> precomputed_{};  // crypto_box_beforenm(C', s')
  uint64_t next_nonce_ = 1;                // ours
  uint64_t client_nonce_ = 0;              // the client's newest
};

}  // namespace frontd
}  // namespace natter

#endif  // NATTER_DAEMONS_FRONTD_ZMTP_H_
