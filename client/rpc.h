// natter rpc: one connection driven by JSON-RPC 2.0 lines, for bots and
// scripts (as signal-cli's jsonRpc mode is).  Requests come a line each on
// standard input:
//
//   {"jsonrpc":"2.0","id":1,"method":"send","params":{"to":2,"text":"hi"}}
//
// and every reply (with the request's id) and every event (a
// notification, method "event", whose params are the object natter listen
// --json prints) goes out a line each on standard output as it happens.
// Methods: send, react, unreact, seen, history, chats.  A request without
// an id is carried out without a reply.  At the end of the input it waits
// up to wait_ms for the replies still owed, then acknowledges the events it
// printed and returns.
#ifndef NATTER_CLIENT_RPC_H_
#define NATTER_CLIENT_RPC_H_

#include <atomic>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "client/client.h"

namespace natter {

// JSON-RPC's own error codes; natter's errors use their wire codes
// (natter(7)), which are positive.
enum RpcError : int {
  kRpcParseError = -32700,
  kRpcInvalidRequest = -32600,
  kRpcMethodNotFound = -32601,
  kRpcInvalidParams = -32602,
};

// One request line made ready for the client: which call, and its
// arguments, or the error reply it gets.  Kept apart from the connection
// so that a test can feed it any line.
struct RpcCall {
  nlohmann::json id;          // null when the request has none or is broken
  bool notification = false;  // no id: no reply
  std::string method;
  // The arguments, by method.
  UserId peer;                       // send: to; others: peer
  std::string text;                  // send
  std::string client_msg_id;         // send, optional
  MessageId message;                 // react, unreact, seen
  std::optional<std::string> emoji;  // react
  History history;                   // history
  Chats chats;                       // chats: the page after a chat, if given
  // Set when the line cannot be carried out: the error reply's code and
  // message.
  int error = 0;
  std::string error_message;
};

RpcCall ParseRpcLine(const std::string& line);

// The reply lines.
nlohmann::json RpcResult(const nlohmann::json& id, nlohmann::json result);
nlohmann::json RpcErrorReply(const nlohmann::json& id, int code,
                             const std::string& message,
                             const char* name = nullptr);

// Runs until standard input ends (then waits up to wait_ms for the replies
// owed) or `interrupted` turns true.  Returns a sysexits code: 0 when every
// request had its reply, 69 when some did not come in time.
int RunRpc(const ClientOptions& options, int wait_ms,
           const std::atomic<bool>& interrupted);

}  // namespace natter

#endif  // NATTER_CLIENT_RPC_H_
