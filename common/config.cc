#include "common/config.h"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <boost/program_options.hpp>

#include "common/text.h"

namespace po = boost::program_options;

namespace natter {
namespace {

const char kDefaultConfig[] = "/etc/natter/natter.conf";

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
[[noreturn]] void Undeclared(const std::string& section, const std::string& name) {
  throw std::logic_error("option '" + name + "' is not declared for [" + section +
                         "] or [cell] in common/options.cc");
}

po::options_description GeneralOptions(DaemonFlags* flags) {
  po::options_description general("General options");
  general.add_options()
      ("config,c", po::value(&flags->config_path), "configuration file")
      ("check,n", po::bool_switch(&flags->check_only),
       "check the configuration and exit")
      ("syslog", po::bool_switch(&flags->use_syslog), "log to syslog")
      ("log-file", po::value(&flags->log_file),
       "append the log to this file (reopened on SIGHUP)")
      ("log-level", po::value(&flags->log_level),
       "debug, info, warn or error")
      ("help,h", po::bool_switch(&flags->help), "this help");
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
  po::options_description file_keys;
  for (const OptionSpec& o : kOptions) {
    file_keys.add_options()(
        (std::string(o.section) + "." + o.name).c_str(),
        po::value<std::string>());
  }
  po::variables_map file_values;
  std::ifstream in(flags->config_path);
  if (in) {
    try {
      po::store(po::parse_config_file(in, file_keys, false), file_values);
    } catch (const po::error& e) {
      return Status(ErrorCode::kBadRequest,
                    flags->config_path + ": " + e.what());
    }
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
    if (file_values.count(file_key)) {
      value = file_values[file_key].as<std::string>();
    }
    if (flag_values.count(o.name)) value = flag_values[o.name].as<std::string>();
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
    return Status(ErrorCode::kBadRequest,
                  name + ": '" + Get(name) + "' is not a duration (90s, 15m, 24h, 7d)");
  }
  *seconds = *v;
  return Status::Ok();
}

std::vector<std::string> Config::GetList(const std::string& name) const {
  return SplitList(Get(name));
}

}  // namespace natter
