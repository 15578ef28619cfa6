#include "common/daemon.h"
#include "daemons/routed/routed.h"

int main(int argc, char** argv) {
  return natter::DaemonMain(
      argc, argv,
      {"natter-routed", "routed",
       [](const natter::Config& c, zmq::context_t& ctx) {
         return std::make_unique<natter::routed::Routed>(c, ctx);
       }});
}
