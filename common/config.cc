#include "common/config.h"

#include <boost/program_options.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "common/text.h"

namespace po = boost::program_options;

namespace natter {
namespace {

const char kDefaultConfig[] = "/etc/natter/natter.conf";

std::string TrimBlanks(const std::string& s) {
  const char* kBlanks = " \t\r";
  size_t begin = s.find_first_not_of(kBlanks);
  if (begin == std::string::npos) return std::string();
  return s.substr(begin, s.find_last_not_of(kBlanks) + 1 - begin);
}

bool InSection(const OptionSpec& o, const std::string& section) {
  return section == o.section || std::string("cell") == o.section;
}

bool Declared(const std::string& section, const std::string& name) {
  for (const OptionSpec& o : kOptions) {
    if (InSection(o, section) && name == o.name) return true;
  }
  return false;
}

// Reading an option the table does not declare is a mistake in the code,
// not in the configuration: it fails loudly (DaemonMain exits EX_SOFTWARE).
[[noreturn]] void Undeclared(const std::string& section,
                             const std::string& name) {
  throw std::logic_error("option '" + name + "' is not declared for [" +
                         section + "] or [cell] in common/options.cc");
}

po::options_description GeneralOptions(DaemonFlags* flags) {
  po::options_description general("General options");
  general.add_options()("config,c", po::value(&flags->config_path),
                        "configuration file")(
      "check,n", po::bool_switch(&flags->check_only),
      "check the configuration and exit")(
      "syslog", po::bool_switch(&flags->use_syslog), "log to syslog")(
      "log-file", po::value(&flags->log_file),
      "append the log to this file (reopened on SIGHUP)")(
      "log-level", po::value(&flags->log_level), "debug, info, warn or error")(
      "help,h", po::bool_switch(&flags->help), "this help");
  return general;
}

po::options_description KeyOptions(const std::string& section) {
  po::options_description keys("Configuration keys (also in natter.conf)");
  for (const OptionSpec& o : kOptions) {
    if (InSection(o, section)) {
      keys.add_options()(o.name, po::value<std::string>(), o.help);
    }
  }
  return keys;
}

}  // namespace

Status ParseConfigFile(std::istream& in, const std::string& name,
                       const std::set<std::string>& known,
                       std::map<std::string, std::string>* out) {
  std::string section, raw;
  for (int number = 1; std::getline(in, raw); ++number) {
    auto error = [&](const std::string& what) {
      return Status(ErrorCode::kBadRequest,
                    name + ":" + std::to_string(number) + ": " + what);
    };
    std::string line = TrimBlanks(raw);
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[' && line.back() == ']') {
      section = TrimBlanks(line.substr(1, line.size() - 2));
      continue;
    }
    size_t eq = line.find('=');
    std::string key =
        eq == std::string::npos ? "" : TrimBlanks(line.substr(0, eq));
    if (key.empty())
      return error("not a [section], a key = value or a # comment");
    if (!section.empty()) key = section + "." + key;
    if (!known.count(key)) return error("unknown key " + key);
    if (!out->emplace(key, TrimBlanks(line.substr(eq + 1))).second) {
      return error(key + " is given twice");
    }
  }
  return Status::Ok();
}

std::string Config::Usage(const std::string& program,
                          const std::string& section) {
  DaemonFlags flags;
  po::options_description all;
  all.add(GeneralOptions(&flags)).add(KeyOptions(section));
  std::ostringstream out;
  out << "usage: " << program << " [-n] [-c file] [--key value ...]\n" << all;
  return out.str();
}

Status Config::Load(const std::string& section, int argc, char** argv,
                    Config* config, DaemonFlags* flags, bool* usage_error) {
  *usage_error = true;
  po::options_description cmdline;
  cmdline.add(GeneralOptions(flags)).add(KeyOptions(section));
  po::variables_map flag_values;
  try {
    po::store(po::command_line_parser(argc, argv).options(cmdline).run(),
              flag_values);
    po::notify(flag_values);
  } catch (const po::error& e) {
    return Status(ErrorCode::kBadRequest, e.what());
  }
  if (flags->help) return Status::Ok();
  *usage_error = false;

  bool explicit_path = !flags->config_path.empty();
  if (!explicit_path) {
    const char* env = std::getenv("NATTER_CONFIG");
    flags->config_path = env != nullptr ? env : kDefaultConfig;
    explicit_path = env != nullptr;
  }

  // The file: every section's keys are known, so a misspelt key anywhere is
  // found by every daemon.
  std::set<std::string> file_keys;
  for (const OptionSpec& o : kOptions) {
    file_keys.insert(std::string(o.section) + "." + o.name);
  }
  std::map<std::string, std::string> file_values;
  std::ifstream in(flags->config_path);
  if (in) {
    Status s = ParseConfigFile(in, flags->config_path, file_keys, &file_values);
    if (!s.ok()) return s;
  } else if (explicit_path) {
    return Status(ErrorCode::kBadRequest,
                  flags->config_path + ": cannot read the file");
  }

  config->section_ = section;
  config->values_.clear();
  for (const OptionSpec& o : kOptions) {
    if (!InSection(o, section)) continue;
    std::string value = o.default_value;
    std::string file_key = std::string(o.section) + "." + o.name;
    auto in_file = file_values.find(file_key);
    if (in_file != file_values.end()) value = in_file->second;
    if (flag_values.count(o.name))
      value = flag_values[o.name].as<std::string>();
    config->values_[o.name] = value;
  }
  return Status::Ok();
}

Config Config::FromMap(const std::string& section,
                       std::map<std::string, std::string> values) {
  Config c;
  c.section_ = section;
  for (const OptionSpec& o : kOptions) {
    if (InSection(o, section) && !values.count(o.name)) {
      values[o.name] = o.default_value;
    }
  }
  for (const auto& [name, value] : values) {
    if (!Declared(section, name)) Undeclared(section, name);
  }
  c.values_ = std::move(values);
  return c;
}

std::string Config::Get(const std::string& name) const {
  // Load and FromMap hold exactly the keys declared for the section and
  // [cell]: a name not here is one that options.cc does not declare.
  auto it = values_.find(name);
  if (it == values_.end()) Undeclared(section_, name);
  return it->second;
}

Status Config::GetUint(const std::string& name, uint64_t* out) const {
  auto v = ParseUint(Get(name));
  if (!v) {
    return Status(ErrorCode::kBadRequest,
                  name + ": '" + Get(name) + "' is not a whole number");
  }
  *out = *v;
  return Status::Ok();
}

Status Config::GetDuration(const std::string& name, uint64_t* seconds) const {
  auto v = ParseDuration(Get(name));
  if (!v) {
    return Status(
        ErrorCode::kBadRequest,
        name + ": '" + Get(name) + "' is not a duration (90s, 15m, 24h, 7d)");
  }
  *seconds = *v;
  return Status::Ok();
}

std::vector<std::string> Config::GetList(const std::string& name) const {
  return SplitList(Get(name));
}

std::vector<std::string> Config::GetShardMap() const {
  return SplitWords(Get("shards"));
}

}  // namespace natter
