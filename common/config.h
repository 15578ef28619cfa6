// natter.conf and the daemons' flags, from one table.
//
// Every key is declared once in kOptions (options.cc): its section, name,
// default and help.  The same entry makes the config file key
// ("[stored]" "data-dir"), the flag (--data-dir) and the text in
// natter.conf(5).  A daemon reads its own section and [cell]; a key that no
// section declares is an error anywhere in the file.
#ifndef NATTER_COMMON_CONFIG_H_
#define NATTER_COMMON_CONFIG_H_

#include <cstdint>
#include <istream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace natter {

struct OptionSpec {
  const char* section;  // "cell", "frontd", "routed", "stored", "notifyd"
  const char* name;
  const char* default_value;
  const char* help;
};

extern const std::vector<OptionSpec> kOptions;

// The flags every daemon takes besides its keys.
struct DaemonFlags {
  std::string config_path;
  bool check_only = false;  // -n: check the configuration and exit
  bool use_syslog = false;
  std::string log_file;  // --log-file: append here, reopen on SIGHUP
  std::string log_level = "info";
  bool help = false;
};

// Reads a file of "key = value" lines under "[section]" lines, the form of
// natter.conf and of natter(1)'s client.conf, into out: "section.key"
// (plain "key" before any section) -> value.  A line whose first non-blank
// character is '#' is a comment; a '#' anywhere else belongs to the value,
// as a Z85 key may hold one (curve.h).  A key not in known, a key given
// twice and a line of no such form are errors; the message starts with
// "name:LINE:".
Status ParseConfigFile(std::istream& in, const std::string& name,
                       const std::set<std::string>& known,
                       std::map<std::string, std::string>* out);

class Config {
 public:
  // Reads argv (flags win) and the config file for a daemon of `section`.
  // Errors are for the command line (EX_USAGE) or the file (EX_CONFIG):
  // usage_error says which.
  static Status Load(const std::string& section, int argc, char** argv,
                     Config* config, DaemonFlags* flags, bool* usage_error);

  // For tests and tools: a config from key/value pairs of one section.
  // A key not declared for the section or [cell] throws std::logic_error.
  static Config FromMap(const std::string& section,
                        std::map<std::string, std::string> values);

  // The value of a key of this daemon's section or of [cell].  Reading a
  // key that options.cc does not declare there is a programming error: it
  // throws std::logic_error naming the key (DaemonMain exits EX_SOFTWARE),
  // never an empty string.  The same for the forms below.
  std::string Get(const std::string& name) const;
  // Numeric and list forms; a bad number is a Status (EX_CONFIG).
  Status GetUint(const std::string& name, uint64_t* out) const;
  Status GetDuration(const std::string& name, uint64_t* seconds) const;
  std::vector<std::string> GetList(const std::string& name) const;
  // [cell] shards: an entry a shard, its replicas' endpoints joined by
  // commas (ReplicaEndpoints splits one).
  std::vector<std::string> GetShardMap() const;

  const std::string& section() const { return section_; }

  // The help text of the daemon's flags.
  static std::string Usage(const std::string& program,
                           const std::string& section);

 private:
  std::string section_;
  std::map<std::string, std::string> values_;  // short name -> value
};

}  // namespace natter

#endif  // NATTER_COMMON_CONFIG_H_
