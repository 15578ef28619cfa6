// natter(1): the command-line client.  Options before the subcommand are
// the connection's (from -c FILE, then flags, then $NATTER_TOKEN for the
// token); the subcommand's own options follow it.
#include <signal.h>
#include <sysexits.h>
#include <unistd.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "client/chat.h"
#include "client/client.h"
#include "client/json_events.h"
#include "client/rpc.h"
#include "client/token_source.h"
#include "common/config.h"
#include "common/curve.h"
#include "common/daemon.h"
#include "common/flags.h"
#include "common/text.h"
#include "common/validate.h"

namespace po = boost::program_options;

namespace natter {
namespace {

std::atomic<bool> g_interrupted{false};
std::atomic<bool> g_resized{false};

void OnInterrupt(int) { g_interrupted = true; }
void OnResize(int) { g_resized = true; }

// A failure that ends the program: one line on stderr, a sysexits code.
struct Exit {
  int code;
  std::string message;
};

// Parses a subcommand's options (and its positional ones, when it has
// any) into their variables; a bad one is a usage error naming the
// subcommand.
void ParseCommand(const char* command, const std::vector<std::string>& args,
                  const po::options_description& opts,
                  const po::positional_options_description& pos = {}) {
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(opts).positional(pos).run(),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw Exit{EX_USAGE, std::string(command) + ": " + e.what()};
  }
}

struct Global {
  ClientOptions client;
  bool json = false;
  std::string config_path;
};

const char kUsage[] =
    "usage: natter [-c file] [-s endpoint] [-k key]\n"
    "              [-t token | --token-file file | --token-command command]\n"
    "              [--device name] [--state-dir dir] [--json] [--timeout "
    "seconds]\n"
    "              command [args]\n"
    "commands:\n"
    "  send PEER [TEXT...]          send TEXT, or each line of stdin, to PEER\n"
    "  listen [--count N] [--for S] missed events, then live ones\n"
    "  history PEER [--at TIME | --before ID | --after ID] [--limit N]\n"
    "  react PEER MSG_ID EMOJI      set your reaction to a message\n"
    "  unreact PEER MSG_ID          remove it\n"
    "  seen PEER MSG_ID             mark PEER's messages up to MSG_ID seen\n"
    "  chats                        your conversations\n"
    "  chat PEER                    talk with PEER (interactive)\n"
    "  rpc [--timeout S]            JSON-RPC lines on stdin, replies and "
    "events on stdout\n";

void Print(const Global& g, const Incoming& in) {
  if (g.json) {
    std::cout << ToJson(in).dump(-1, ' ', false,
                                 nlohmann::json::error_handler_t::replace)
              << "\n";
  } else {
    std::cout << ToText(in) << "\n";
  }
  std::cout.flush();
}

std::string DefaultStateDir() {
  if (const char* x = std::getenv("XDG_STATE_HOME"); x && *x) {
    return std::string(x) + "/natter";
  }
  if (const char* h = std::getenv("HOME"); h && *h) {
    return std::string(h) + "/.local/state/natter";
  }
  return "";
}

std::string DefaultConfigPath() {
  std::string path;
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x && *x) {
    path = std::string(x) + "/natter/client.conf";
  } else if (const char* h = std::getenv("HOME"); h && *h) {
    path = std::string(h) + "/.config/natter/client.conf";
  }
  return std::ifstream(path) ? path : std::string();
}

// Splits argv where the subcommand starts.
size_t SubcommandIndex(int argc, char** argv) {
  static const std::set<std::string> kTakesValue = {
      "-c",           "--config",        "-s",       "--server",
      "-k",           "--server-key",    "-t",       "--token",
      "--token-file", "--token-command", "--device", "--state-dir",
      "--timeout"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.empty() || a[0] != '-') return static_cast<size_t>(i);
    if (kTakesValue.count(a)) ++i;
  }
  return static_cast<size_t>(argc);
}

// A --timeout: 1 second to a day, in milliseconds.
int TimeoutMs(const std::string& text, const std::string& what) {
  auto secs = ParseDuration(text);
  if (!secs || *secs == 0 || *secs > 86400) {
    throw Exit{EX_USAGE, what + ": '" + text + "' is not a number of seconds"};
  }
  return static_cast<int>(*secs * 1000);
}

// Where the token comes from: one of these, or none.
struct TokenChoice {
  std::string token, file, command;
};

// Takes the token, or its source, from choice if it names one; more than
// one is the error `twice`.
bool TakeToken(const TokenChoice& choice, const Exit& twice,
               ClientOptions* options) {
  int given =
      !choice.token.empty() + !choice.file.empty() + !choice.command.empty();
  if (given == 0) return false;
  if (given > 1) throw twice;
  options->token = choice.token;
  if (!choice.file.empty()) options->token_source = TokenFile(choice.file);
  if (!choice.command.empty()) {
    options->token_source = TokenCommand(choice.command, options->timeout_ms);
  }
  return true;
}

Global ParseGlobal(int argc, char** argv) {
  Global g;
  std::string server_key, token, token_file, token_command, device, state_dir,
      timeout;
  std::vector<std::string> servers;  // -s, once or more
  po::options_description opts;
  opts.add_options()("config,c", po::value(&g.config_path))(
      "server,s", po::value(&servers)->composing())(
      "server-key,k", po::value(&server_key))("token,t", po::value(&token))(
      "token-file", po::value(&token_file))(
      "token-command", po::value(&token_command))("device", po::value(&device))(
      "state-dir", po::value(&state_dir))("timeout", po::value(&timeout))(
      "json", po::bool_switch(&g.json))("help,h", "");
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw Exit{EX_USAGE, e.what()};
  }
  if (vm.count("help")) {
    std::cout << kUsage;
    throw Exit{EX_OK, ""};
  }
  // The config file: the same names as the long options.
  std::string file =
      g.config_path.empty() ? DefaultConfigPath() : g.config_path;
  std::map<std::string, std::string> conf;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!in) throw Exit{EX_CONFIG, file + ": cannot read the file"};
    Status s =
        ParseConfigFile(in, file,
                        {"server", "server-key", "token", "token-file",
                         "token-command", "device", "state-dir", "timeout"},
                        &conf);
    if (!s.ok()) throw Exit{EX_CONFIG, s.message()};
  }
  auto pick = [&](const std::string& flag, const char* key,
                  const char* env) -> std::string {
    if (!flag.empty()) return flag;
    if (env != nullptr) {
      if (const char* e = std::getenv(env); e && *e) return e;
    }
    auto it = conf.find(key);
    return it == conf.end() ? std::string() : it->second;
  };
  std::string server;
  for (const std::string& s : servers)
    server += (server.empty() ? "" : " ") + s;
  g.client.server = pick(server, "server", "NATTER_SERVER");
  for (const std::string& s : SplitList(g.client.server)) {
    Endpoint endpoint;
    Status valid = ParseEndpoint(s, &endpoint);
    if (!valid.ok()) {
      throw Exit{!server.empty() || std::getenv("NATTER_SERVER") ? EX_USAGE
                                                                 : EX_CONFIG,
                 valid.message()};
    }
  }
  g.client.server_key = pick(server_key, "server-key", nullptr);
  if (CurveKey key; !g.client.server_key.empty() &&
                    !ParseCurveKey(g.client.server_key, &key)) {
    throw Exit{
        server_key.empty() ? EX_CONFIG : EX_USAGE,
        (server_key.empty() ? file + ": server-key" : std::string("-k")) +
            ": not a CURVE key (" + kCurveKeyForms + ")"};
  }
  g.client.device = pick(device, "device", nullptr);
  if (g.client.device.empty()) g.client.device = "default";
  g.client.state_dir = pick(state_dir, "state-dir", nullptr);
  if (g.client.state_dir.empty()) g.client.state_dir = DefaultStateDir();
  std::string t = pick(timeout, "timeout", nullptr);
  if (!t.empty()) g.client.timeout_ms = TimeoutMs(t, "--timeout");
  if (g.client.server.empty()) {
    throw Exit{EX_USAGE, "no server: give -s ENDPOINT or -c client.conf"};
  }
  // The flags' choice of token, else $NATTER_TOKEN, else the file's.
  const char* env = std::getenv("NATTER_TOKEN");
  if (!TakeToken({token, token_file, token_command},
                 {EX_USAGE, "give one of -t, --token-file and --token-command"},
                 &g.client) &&
      !TakeToken({env != nullptr ? env : "", "", ""}, {}, &g.client) &&
      !TakeToken({conf["token"], conf["token-file"], conf["token-command"]},
                 {EX_CONFIG,
                  file + ": give one of token, token-file and token-command"},
                 &g.client)) {
    throw Exit{
        EX_USAGE,
        "no token: give -t TOKEN, --token-file FILE, --token-command COMMAND, "
        "$NATTER_TOKEN or one of them in the config"};
  }
  return g;
}

MessageId ParseMessageId(const std::string& text) {
  auto v = ParseUint(text);
  if (!v || *v == 0) throw Exit{EX_USAGE, "'" + text + "' is not a message id"};
  return MessageId(*v);
}

UserId ParsePeer(const std::string& text) {
  auto v = ParseUint(text);
  if (!v || *v == 0)
    throw Exit{EX_USAGE, "'" + text + "' is not a user id (a number above 0)"};
  return UserId(*v);
}

std::unique_ptr<Client> MakeClient(const ClientOptions& options) {
  try {
    return std::make_unique<Client>(options);
  } catch (const std::invalid_argument& e) {
    throw Exit{EX_USAGE, e.what()};
  }
}

void Connect(Client& client) {
  Status s = client.Connect();
  if (!s.ok()) throw Exit{ExitCodeFor(s.code()), s.message()};
}

// Connects as a one-shot command: the mailbox is left for listen.
std::unique_ptr<Client> ConnectOneShot(const Global& g) {
  ClientOptions o = g.client;
  o.receive = false;
  auto client = MakeClient(o);
  Connect(*client);
  return client;
}

// Waits for the answer to one request; an error answer ends the program.
Incoming Await(Client& client, uint64_t request, const std::string& command) {
  std::vector<Incoming> in;
  for (;;) {
    if (g_interrupted) throw Exit{1, command + ": interrupted"};
    in.clear();
    client.Poll(100, &in);
    for (Incoming& item : in) {
      if (item.request != request) continue;
      if (item.kind == Incoming::Kind::kError) {
        throw Exit{ExitCodeFor(item.error.code()),
                   command + ": " + item.error.message()};
      }
      return std::move(item);
    }
  }
}

// Positional arguments of a command with no options of its own.
std::vector<std::string> Positionals(const std::string& command,
                                     const std::vector<std::string>& args,
                                     size_t count, const char* usage) {
  for (const auto& a : args) {
    if (a.size() > 1 && a[0] == '-' && a != "--") {
      throw Exit{EX_USAGE, command + ": unknown option " + a};
    }
  }
  std::vector<std::string> out;
  for (const auto& a : args) {
    if (a != "--") out.push_back(a);
  }
  if (out.size() != count)
    throw Exit{EX_USAGE, std::string("usage: natter ") + usage};
  return out;
}

void PrintJsonLine(const nlohmann::json& j) {
  std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
            << "\n";
}

// A history item or a chat: a JSON line with --json, else a line of text.
template <typename T>
void PrintItem(const Global& g, const T& item, UserId viewer) {
  if (g.json) {
    PrintJsonLine(ToJson(item));
  } else {
    std::cout << ToText(item, viewer) << "\n";
  }
}

int HistoryCommand(const Global& g, const std::vector<std::string>& args) {
  std::string peer_text, at, before, after;
  uint32_t limit = kDefaultHistoryPage;
  po::options_description opts;
  opts.add_options()("peer", po::value(&peer_text))("at", po::value(&at))(
      "before", po::value(&before))("after", po::value(&after))(
      "limit", UintValue("limit", &limit));
  po::positional_options_description pos;
  pos.add("peer", 1);
  ParseCommand("history", args, opts, pos);
  if (peer_text.empty()) {
    throw Exit{EX_USAGE,
               "usage: natter history PEER [--at TIME | --before ID | --after "
               "ID] [--limit N]"};
  }
  History q;
  q.peer = ParsePeer(peer_text);
  int given = !at.empty() + !before.empty() + !after.empty();
  if (given > 1)
    throw Exit{EX_USAGE, "history: give one of --at, --before and --after"};
  if (limit == 0 || limit > kMaxHistoryPage) {
    throw Exit{EX_USAGE,
               "history: --limit is 1 to " + std::to_string(kMaxHistoryPage)};
  }
  q.limit = limit;
  if (!at.empty()) {
    auto t = ParseTime(at);
    if (!t)
      throw Exit{EX_USAGE,
                 "history: --at: '" + at + "' is not RFC 3339 or milliseconds"};
    q.mode = HistoryMode::kAt;
    q.bound = *t;
  } else if (!before.empty()) {
    q.mode = HistoryMode::kBefore;
    q.bound = ParseMessageId(before).value;
  } else if (!after.empty()) {
    q.mode = HistoryMode::kAfter;
    q.bound = ParseMessageId(after).value;
  }
  auto client = ConnectOneShot(g);
  Incoming page = Await(*client, client->GetHistory(q), "history");
  for (const HistoryItem& item : page.history.messages)
    PrintItem(g, item, client->user());
  return EX_OK;
}

int ReactCommand(const Global& g, const std::vector<std::string>& args,
                 bool set) {
  const char* usage = set ? "react PEER MSG_ID EMOJI" : "unreact PEER MSG_ID";
  auto a = Positionals(set ? "react" : "unreact", args, set ? 3 : 2, usage);
  UserId peer = ParsePeer(a[0]);
  MessageId id = ParseMessageId(a[1]);
  std::optional<std::string> emoji;
  if (set) emoji = a[2];
  natter::React check{peer, id, emoji};
  Status s = ValidateReact(check);
  if (!s.ok())
    throw Exit{ExitCodeFor(s.code()),
               std::string(set ? "react" : "unreact") + ": " + s.message()};
  auto client = ConnectOneShot(g);
  Await(*client, client->React(peer, id, emoji), set ? "react" : "unreact");
  return EX_OK;
}

int SeenCommand(const Global& g, const std::vector<std::string>& args) {
  auto a = Positionals("seen", args, 2, "seen PEER MSG_ID");
  UserId peer = ParsePeer(a[0]);
  MessageId id = ParseMessageId(a[1]);
  auto client = ConnectOneShot(g);
  Await(*client, client->MarkSeen(peer, id), "seen");
  return EX_OK;
}

int ChatsCommand(const Global& g, const std::vector<std::string>& args) {
  Positionals("chats", args, 0, "chats");
  auto client = ConnectOneShot(g);
  Chats query;
  for (;;) {
    Incoming page = Await(*client, client->GetChats(query), "chats");
    for (const ChatItem& chat : page.chats.chats)
      PrintItem(g, chat, client->user());
    if (!page.chats.more || page.chats.chats.empty()) return EX_OK;
    query = NextChatsPage(page.chats);
  }
}

int Send(const Global& g, const std::vector<std::string>& args) {
  std::vector<std::string> words;
  bool trace = false;
  po::options_description opts;
  opts.add_options()("words", po::value(&words))("trace",
                                                 po::bool_switch(&trace));
  po::positional_options_description pos;
  pos.add("words", -1);
  ParseCommand("send", args, opts, pos);
  if (words.empty())
    throw Exit{EX_USAGE, "send: which user? natter send PEER [TEXT...]"};
  UserId peer = ParsePeer(words[0]);
  bool from_stdin = words.size() == 1;
  std::string text;
  for (size_t i = 1; i < words.size(); ++i) {
    if (i > 1) text += " ";
    text += words[i];
  }
  auto owned = ConnectOneShot(g);
  Client& client = *owned;
  client.set_trace(trace);

  const size_t kWindow = 256;
  int exit_code = EX_OK;
  bool more_input = true;
  std::vector<Incoming> in;
  auto take = [&](const Incoming& item) {
    if (item.kind == Incoming::Kind::kProcessed) {
      Print(g, item);
    } else if (item.kind == Incoming::Kind::kError) {
      std::cerr << "natter: send: " << Printable(item.error.message()) << "\n";
      if (exit_code == EX_OK) exit_code = ExitCodeFor(item.error.code());
    }
  };
  if (!from_stdin) {
    client.Send(peer, text);
    more_input = false;
  }
  std::string line;
  while (more_input || client.SendsInFlight() > 0) {
    while (more_input && client.SendsInFlight() < kWindow) {
      if (!std::getline(std::cin, line)) {
        more_input = false;
        break;
      }
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      client.Send(peer, line);
    }
    if (g_interrupted) break;
    in.clear();
    client.Poll(100, &in);
    for (const Incoming& item : in) take(item);
  }
  if (g_interrupted && client.SendsInFlight() > 0) {
    std::cerr << "natter: send: interrupted with " << client.SendsInFlight()
              << " messages not yet processed\n";
    return 1;
  }
  return exit_code;
}

int Listen(const Global& g, const std::vector<std::string>& args) {
  uint64_t count = 0;
  std::string for_text;
  po::options_description opts;
  opts.add_options()("count", UintValue("count", &count))("for",
                                                          po::value(&for_text));
  ParseCommand("listen", args, opts);
  auto start = std::chrono::steady_clock::now();
  std::chrono::milliseconds limit{0};
  if (!for_text.empty()) {
    auto secs = ParseDuration(for_text);
    if (!secs)
      throw Exit{EX_USAGE, "listen: --for: '" + for_text +
                               "' is not a number of seconds"};
    limit = std::chrono::seconds(*secs);
  }
  // Watching the connection: after frontd restarts, what was missed is
  // fetched as soon as the connection is back, not at the next ping.
  ClientOptions options = g.client;
  options.watch_link = true;
  auto owned = MakeClient(options);
  Client& client = *owned;
  Connect(client);
  uint64_t messages = 0;
  std::vector<Incoming> in;
  while (!g_interrupted) {
    if (count > 0 && messages >= count) break;
    if (limit.count() > 0 && std::chrono::steady_clock::now() - start >= limit)
      break;
    in.clear();
    size_t room = count > 0 ? static_cast<size_t>(count - messages) : 0;
    client.Poll(100, &in, room);
    for (const Incoming& item : in) {
      if (item.kind == Incoming::Kind::kError) {
        std::cerr << "natter: listen: " << Printable(item.error.message())
                  << "\n";
        return ExitCodeFor(item.error.code());
      }
      if (item.kind == Incoming::Kind::kLink) continue;
      Print(g, item);
      if (item.kind == Incoming::Kind::kEvent &&
          item.event.message() != nullptr)
        ++messages;
    }
  }
  Status s = client.Flush();
  if (!s.ok()) {
    std::cerr << "natter: listen: " << Printable(s.message()) << "\n";
    return ExitCodeFor(s.code());
  }
  return EX_OK;
}

int ChatCommand(const Global& g, const std::vector<std::string>& args) {
  auto a = Positionals("chat", args, 1, "chat PEER");
  UserId peer = ParsePeer(a[0]);
  struct sigaction sa = {};
  sa.sa_handler = OnResize;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGWINCH, &sa, nullptr);
  try {
    return RunChat(g.client, peer, g_interrupted, g_resized);
  } catch (const std::invalid_argument& e) {
    throw Exit{EX_USAGE, std::string("chat: ") + e.what()};
  }
}

int RpcCommand(const Global& g, const std::vector<std::string>& args) {
  std::string timeout;
  po::options_description opts;
  opts.add_options()("timeout", po::value(&timeout));
  ParseCommand("rpc", args, opts);
  int wait_ms = timeout.empty() ? g.client.timeout_ms
                                : TimeoutMs(timeout, "rpc: --timeout");
  try {
    return RunRpc(g.client, wait_ms, g_interrupted);
  } catch (const std::invalid_argument& e) {
    throw Exit{EX_USAGE, std::string("rpc: ") + e.what()};
  }
}

int Main(int argc, char** argv) {
  CatchStopSignals(OnInterrupt);

  size_t sub = SubcommandIndex(argc, argv);
  Global g = ParseGlobal(static_cast<int>(sub), argv);
  if (sub >= static_cast<size_t>(argc))
    throw Exit{EX_USAGE, "no command; see natter -h"};
  std::string command = argv[sub];
  std::vector<std::string> args(argv + sub + 1, argv + argc);
  if (command == "send") return Send(g, args);
  if (command == "listen") return Listen(g, args);
  if (command == "history") return HistoryCommand(g, args);
  if (command == "react") return ReactCommand(g, args, true);
  if (command == "unreact") return ReactCommand(g, args, false);
  if (command == "seen") return SeenCommand(g, args);
  if (command == "chats") return ChatsCommand(g, args);
  if (command == "chat") return ChatCommand(g, args);
  if (command == "rpc") return RpcCommand(g, args);
  throw Exit{EX_USAGE, "'" + command + "' is not a command; see natter -h"};
}

}  // namespace
}  // namespace natter

int main(int argc, char** argv) {
  try {
    return natter::Main(argc, argv);
  } catch (const natter::Exit& e) {
    // One line, whatever the server or the arguments held.
    if (!e.message.empty())
      std::cerr << "natter: " << natter::Printable(e.message) << "\n";
    return e.code;
  } catch (const std::exception& e) {
    std::cerr << "natter: " << e.what() << "\n";
    return 1;
  }
}
