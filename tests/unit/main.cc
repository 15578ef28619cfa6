#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "common/log.h"

int main(int argc, char** argv) {
  natter::LogInit("unit-tests", false, natter::LogLevel::kWarn);
  return Catch::Session().run(argc, argv);
}
