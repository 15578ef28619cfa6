// The natter client library: one connection to a frontd, as one device of
// one user.  natter(1), natter-bench and the tests all speak through it.
//
// It says hello with the access token, then catches up on the mailbox from
// the device's cursor (events marked missed), then hands out live events.
// Events reach the application exactly once and in seq order: duplicates are
// dropped, and a gap in the seqs (the live path dropped something) is
// repaired by fetching the missing range from the mailbox.  A device skips
// its own events (its sends, reactions and seen marks: it had their
// answers), except that one of its sends read back before its processed
// receipt came is that receipt.  Everything the application has taken from
// Poll is acknowledged, which advances the device's cursor on its home
// shard.
//
// Requests are retried with the same correlation id and, for sends, the
// same client_msg_id, so a retry never makes a second message.  A client
// whose session was lost (frontd restarted) says hello again and re-sends
// what was unanswered.
//
// A session lasts as long as its token: frontd ends it when the token
// expires or the key that signed it is retired, saying so in an error with
// corr 0.  A client given a token source says hello again on the same
// connection with a fresh token, shortly before its token expires and at
// once when the session ends; one without hands that error out
// (Incoming::SessionOver).
//
// Its rules live in parts of their own, each tested without sockets:
// RequestQueue (request_queue.h: the window, retries, deadlines, the
// writes held for the user's rate), MailboxOrder (mailbox_order.h: seq
// order, gaps, own changes, the catch-up) and AckPolicy (ack_policy.h).
// Client owns the socket and the session (hello, token renewal, the link
// watch), and passes what comes and goes between them.
//
// Not thread-safe: one thread drives a Client.  Several Clients may share
// one zmq::context_t.
#ifndef NATTER_CLIENT_CLIENT_H_
#define NATTER_CLIENT_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "client/ack_policy.h"
#include "client/mailbox_order.h"
#include "client/request_queue.h"
#include "client/token_source.h"
#include "common/curve.h"
#include "common/proto.h"
#include "common/status.h"

namespace natter {

struct ClientOptions {
  // frontd's endpoint, or several (separated by spaces or commas), each may
  // name its own key after '@': the client takes one at random and moves
  // to another when it is lost (see failover_ms).
  std::string server;
  std::string server_key;  // frontd's CURVE public key, 40 characters of
                           // Z85 or 64 hex digits (for an endpoint that
                           // names none); empty: no CURVE
  std::string token;       // empty with a token_source: the first comes from it
  // Where fresh tokens come from (see token_source.h); empty: the token is
  // fixed, and the session ends with it.  Called from Connect and Poll.
  TokenSource token_source;
  std::string device = "default";
  std::string
      state_dir;  // where the device's key and cursor live; may be empty
  int timeout_ms = 10000;  // longest wait for an answer from the server
  int retry_ms = 2000;     // an unanswered request is sent again after this
                           // (then after 2x, then 4x; each give or take 25%)
  int gap_grace_ms = 200;  // a seq gap this old is repaired from the mailbox
  int resync_ms = 30000;   // when idle, look at the mailbox this often
  int ping_ms = 10000;     // when idle, show the server we are alive
  // With several servers: a frontd that has not answered anything for this
  // long while requests wait (a ping goes to it halfway; an answer that
  // came and waits unread counts, however seldom Poll is called), that
  // refused the handshake as busy, or whose connection dropped (seen with
  // watch_link), is left for another at random: a quarter of it after
  // the last move at the soonest (after a busy refusal, all of it),
  // doubling with jitter while moves bring no welcome; the session is
  // made again there and what was missed is fetched from the mailbox.
  int failover_ms = 4000;
  // Requests on the wire at once; more wait here, in order.  Below
  // frontd's max-in-flight (256), so the server never has to refuse one
  // (a refused send would be retried later, and overtaken).
  size_t max_in_flight = 200;
  // Take the mailbox's events (and acknowledge them).  A one-shot command
  // (send, history, ...) says false: it neither reads nor moves the
  // device's cursor, so a later listen still sees what was missed.
  bool receive = true;
  // Ask frontd to log each request's path through the cell at level info
  // (its trace id comes back with the answer: Incoming::trace).
  bool trace = false;
  // Watch the connection: Poll reports losing frontd and having a session
  // again (Incoming::Kind::kLink), and once the connection is back the
  // session is checked at once rather than at the next ping, so what was
  // missed meanwhile is fetched without delay.  Costs a monitor socket, so
  // off for programs with thousands of clients.
  bool watch_link = false;
};

// One thing that arrived for the application.
struct Incoming {
  enum class Kind {
    kProcessed,
    kEvent,
    kError,
    kOk,
    kHistory,
    kChats,
    kMailbox,
    kLink
  };
  Kind kind = Kind::kEvent;
  uint64_t request = 0;       // the call's request id, for an answer
  uint64_t trace = 0;         // an answer's trace id (without the top bit)
  Processed processed;        // kProcessed
  Event event;                // kEvent
  bool missed = false;        // kEvent: from the catch-up after connecting
  Status error;               // kError
  std::string client_msg_id;  // kError: the send it answers, if one
  HistoryReply history;       // kHistory
  ChatsReply chats;           // kChats
  SyncReply mailbox;          // kMailbox
  bool online = false;        // kLink: a session again (else: frontd lost)

  // An error that answers no request: the session is over (its token
  // expired or its key was retired and no fresh token could be had, a
  // fresh token was refused, or frontd did not answer the hello).
  bool SessionOver() const { return kind == Kind::kError && request == 0; }
};

// The query for the chats page after page (when page.more says there is one).
Chats NextChatsPage(const ChatsReply& page);

class Client {
 public:
  // ctx may be null: the client then owns a context of its own.
  explicit Client(ClientOptions options, zmq::context_t* ctx = nullptr);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Says hello and waits for the welcome, at most timeout_ms; then starts
  // catching up.  Token problems come back as their error codes (or the
  // token source's), kUnavailable when the server does not answer.
  Status Connect();

  UserId user() const { return user_; }
  // Requests from now on ask for their path in the logs (see
  // ClientOptions::trace).
  void set_trace(bool on) { options_.trace = on; }
  const std::string& device() const { return device_; }

  // Queues a message; returns its client_msg_id (a new random one unless
  // given).  Its processed receipt, or an error, comes from Poll.
  std::string Send(UserId to, const std::string& text,
                   std::string client_msg_id = "");

  // Requests whose answer (kOk, kHistory, kChats or kError, with the
  // returned request id) comes from Poll.
  // Sets the user's reaction to message id of the conversation with peer;
  // nullopt removes it.
  uint64_t React(UserId peer, MessageId id, std::optional<std::string> emoji);
  // The user has seen the peer's messages up to id.
  uint64_t MarkSeen(UserId peer, MessageId id);
  uint64_t GetHistory(const History& query);
  // A page of the user's conversations; the next one is asked with the
  // last chat's last_id and peer as query.before_id and before_peer.
  uint64_t GetChats(const Chats& query = Chats());
  // A page of the mailbox after seq `after`, as it is on the home shard,
  // for tools: it does not touch what Poll hands out or the cursor.
  uint64_t GetMailbox(Seq after, uint32_t limit);

  // Waits up to timeout_ms for anything and appends what arrived; hands
  // out at most max_events events (0: no limit), the rest wait.
  void Poll(int timeout_ms, std::vector<Incoming>* out, size_t max_events = 0);

  // Acknowledges everything handed out and waits (at most timeout_ms) until
  // the home shard has it; saves the cursor in the state folder.
  Status Flush();

  // The catch-up after Connect is over (every missed event handed out).
  bool CaughtUp() const { return mailbox_.caught_up(); }
  // Sends not yet answered.
  size_t SendsInFlight() const { return requests_.sends_unanswered(); }
  // The connection's socket, readable when something arrived: for a
  // program that drives many Clients from one thread and waits on all of
  // them at once (zmq::poll), then calls Poll(0) on each.
  zmq::pollitem_t PollItem() { return {socket_.handle(), 0, ZMQ_POLLIN, 0}; }
  Seq last_seq() const { return mailbox_.last_seq(); }
  // Whether the client has a session now (false between frontds, while a
  // move's new session is being made).
  bool InSession() const { return session_; }
  // The frontd in use now, and how many times the client moved.
  const std::string& current_server() const { return server(); }
  uint64_t server_moves() const { return moves_; }

 private:
  using Clock = std::chrono::steady_clock;

  // Connects a new socket to servers_[current_].
  void OpenSocket();
  // Leaves this frontd for another of the servers (if there is another):
  // a new connection and a new session, the requests waiting sent again.
  void MoveServer(const char* why, std::vector<Incoming>* out);
  // Whether this frontd seems lost (see ClientOptions::failover_ms).
  void CheckServer(std::vector<Incoming>* out);
  const std::string& server() const { return servers_[current_]; }
  // A refusal in the handshake (frontd is full: kBusy), or ok.
  Status HandshakeRefusal();
  void StopHandshakeWatch();
  // watch_link: reads the monitor's connection events.
  void WatchLink(std::vector<Incoming>* out);
  void SetServerKey(const CurveKey& key);
  void SayHello(const std::string& token);
  // The session is gone (frontd forgot it, or ended it): requests wait for
  // the next.
  void LoseSession();
  // frontd ended the session (why, with corr 0): hello again with a fresh
  // token, or hand why out.
  void SessionEnded(const Status& why, std::vector<Incoming>* out);
  // With a token source: a fresh token while the session's nears its end.
  void Renew();
  // The requests the application waits on (the library's own — sync, ack,
  // ping — are handled inside; a hello's refusal is handed out too).
  static bool ForApplication(MsgType type) {
    return type != MsgType::kSync && type != MsgType::kAck &&
           type != MsgType::kPing;
  }
  template <typename T>
  uint64_t Ask(const T& body, const std::string& cmid = "",
               bool app = ForApplication(FrameOf<T>::kType));
  // answered: an answer is awaited (silence then means a lost frontd).
  void Transmit(const std::string& frame, bool answered = true);

  // What came from frontd, by kind.
  void Handle(const zmq::message_t& msg, std::vector<Incoming>* out);
  void TakeUnasked(const Frame& f, std::vector<Incoming>* out);
  void TakeWelcome(const Frame& f, std::vector<Incoming>* out);
  void TakeProcessed(const Frame& f, std::vector<Incoming>* out);
  void TakeReply(const Frame& f, std::vector<Incoming>* out);
  void TakeSyncReply(const Frame& f, std::vector<Incoming>* out);
  void TakeError(const Frame& f, std::vector<Incoming>* out);
  // kUnavailable: the server did not answer within timeout_ms.
  Status NoAnswer() const;
  // The application's error for a request that failed.
  void Failed(const RequestQueue::Request& r, const Status& why,
              std::vector<Incoming>* out);

  // Hands the application the events next in seq order (and takes our own
  // sends read back as their receipts).
  void HandOut(std::vector<Incoming>* out, size_t max_events);
  // One of this device's own events: if it is a send waiting for its
  // answer, that answer.
  void HandOutReceipt(const Event& event, std::vector<Incoming>* out);
  void Tick(std::vector<Incoming>* out);
  void SendAck();
  void SaveCursor();
  Seq LoadCursor() const;
  std::string StatePath(const char* suffix) const;

  ClientOptions options_;
  std::unique_ptr<zmq::context_t> own_ctx_;
  zmq::context_t* ctx_;
  zmq::socket_t socket_;
  zmq::socket_t handshake_;  // monitor of socket_ until the welcome

  UserId user_;
  std::string device_;
  bool session_ = false;
  uint64_t next_corr_ = 1;
  uint64_t hello_corr_ = 0;
  std::string hello_token_;  // the token of the last hello
  uint64_t expires_ = 0;     // the session's token's, Unix seconds
  Clock::time_point next_renew_{};
  Clock::time_point last_sent_{};

  RequestQueue requests_;
  MailboxOrder mailbox_;
  AckPolicy acks_;

  // watch_link: the connection to frontd was lost and no frame has come
  // since.
  bool link_down_ = false;
  bool heard_since_down_ = false;
  // The monitor saw the connection drop, and nothing came since.
  bool disconnected_ = false;

  // The frontds given, and the one in use.
  std::vector<std::string> servers_;
  size_t current_ = 0;
  uint64_t moves_ = 0;
  uint64_t moves_without_welcome_ = 0;
  Clock::time_point next_move_at_{};   // no move before (see MoveServer)
  const char* move_wanted_ = nullptr;  // a move asked before its time
  Status last_refusal_;                // the last busy refusal while connecting
  // Something was sent after the last frame came, at awaiting_since_; a
  // probe ping went since.
  bool awaiting_ = false;
  bool probed_ = false;
  Clock::time_point awaiting_since_{};
};

}  // namespace natter

#endif  // NATTER_CLIENT_CLIENT_H_
