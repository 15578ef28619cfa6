#include "tests/support/temp_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

namespace natter {

namespace {

bool KeepTestFolders() {
  const char* keep = std::getenv("NATTER_TEST_KEEP");
  return keep != nullptr && std::strcmp(keep, "1") == 0;
}

}  // namespace

TempDir::TempDir() : TempDir("natter-test", KeepTestFolders()) {}

TempDir::TempDir(const std::string& prefix, bool keep) : keep_(keep) {
  std::error_code ec;
  const std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) throw std::runtime_error("no temporary folder: " + ec.message());
  // mkdtemp: a new name, made atomically, mode 0700.
  std::string name = (base / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(name.data()) == nullptr) {
    throw std::runtime_error(name + ": " + std::strerror(errno));
  }
  path_ = name;
}

TempDir::~TempDir() {
  if (keep_) return;
  std::error_code
      ec;  // what cannot be removed stays; a destructor cannot say so
  std::filesystem::remove_all(path_, ec);
}

}  // namespace natter
