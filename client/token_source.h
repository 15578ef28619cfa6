// Where a long-running client gets a fresh access token when its session's
// is about to end (natter --token-file, --token-command): a function the
// client library calls, at start and again whenever it needs one
// (ClientOptions::token_source).
//
// A source that fails says why as a Status: the file sources with
// kTokenMalformed (no usable token: exit 77), the command sources with
// kUnavailable (what gives tokens is not working: exit 69).
#ifndef NATTER_CLIENT_TOKEN_SOURCE_H_
#define NATTER_CLIENT_TOKEN_SOURCE_H_

#include <functional>
#include <string>

#include "common/status.h"

namespace natter {

// Fills *token, or says why it cannot.
using TokenSource = std::function<Status(std::string* token)>;

// The first line of the file at path, read at each call.
TokenSource TokenFile(const std::string& path);

// The first line of what `/bin/sh -c command` prints on its standard
// output, run at each call with standard input from /dev/null; it fails if
// the command exits non-zero, prints nothing or runs longer than
// timeout_ms (then it is killed).
TokenSource TokenCommand(const std::string& command, int timeout_ms);

}  // namespace natter

#endif  // NATTER_CLIENT_TOKEN_SOURCE_H_
