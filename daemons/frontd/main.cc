#include "common/daemon.h"
#include "daemons/frontd/frontd.h"

int main(int argc, char** argv) {
  return natter::DaemonMain(
      argc, argv,
      {"natter-frontd", "frontd",
       [](const natter::Config& c, zmq::context_t& ctx) {
         return std::make_unique<natter::frontd::Frontd>(c, ctx);
       }});
}
