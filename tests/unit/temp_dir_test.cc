// tests/support's TempDir, which the tests, natter-chaos and natter-bench
// make their folders with.
#include "tests/support/temp_dir.h"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>

using namespace natter;

namespace {

// Sets $TMPDIR while it lives, then puts back what was there.
class TmpdirSetting {
 public:
  explicit TmpdirSetting(const std::string& value) {
    if (const char* old = std::getenv("TMPDIR")) saved_ = old;
    ::setenv("TMPDIR", value.c_str(), 1);
  }
  ~TmpdirSetting() {
    if (saved_) {
      ::setenv("TMPDIR", saved_->c_str(), 1);
    } else {
      ::unsetenv("TMPDIR");
    }
  }

 private:
  std::optional<std::string> saved_;
};

}  // namespace

TEST_CASE(
    "a temporary folder is made in $TMPDIR and goes with everything in it, "
    "unless kept") {
  namespace fs = std::filesystem;
  TempDir outer;
  TmpdirSetting tmpdir(outer.path());
  std::string gone, kept;
  {
    TempDir dir("natter-unit", false);
    gone = dir.path();
    CHECK(gone.rfind(outer.path() + "/natter-unit-", 0) == 0);
    CHECK(fs::is_directory(gone));
    CHECK((fs::status(gone).permissions() & fs::perms::all) ==
          fs::perms::owner_all);
    fs::create_directories(gone + "/a/b");
    std::ofstream(gone + "/a/b/file") << "x\n";
    TempDir other("natter-unit", false);
    CHECK(other.path() != gone);
    TempDir keep("natter-kept", true);
    kept = keep.path();
    CHECK(keep.kept());
  }
  CHECK_FALSE(fs::exists(gone));
  CHECK(fs::is_directory(kept));
  // A $TMPDIR that is not there is an error, not a folder somewhere else.
  TmpdirSetting missing(outer.path() + "/none");
  CHECK_THROWS_AS(TempDir("natter-unit", false), std::runtime_error);
}
