#define CATCH_CONFIG_RUNNER
#include <signal.h>

#include <catch2/catch.hpp>

#include "common/log.h"

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  natter::LogInit("integration-tests", false, natter::LogLevel::kWarn);
  return Catch::Session().run(argc, argv);
}
