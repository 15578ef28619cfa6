#include "common/daemon.h"
#include "daemons/notifyd/notifyd.h"

int main(int argc, char** argv) {
  return natter::DaemonMain(
      argc, argv,
      {"natter-notifyd", "notifyd",
       [](const natter::Config& c, zmq::context_t& ctx) {
         return std::make_unique<natter::notifyd::Notifyd>(c, ctx);
       }});
}
