#include "common/daemon.h"
#include "daemons/stored/stored.h"

int main(int argc, char** argv) {
  return natter::DaemonMain(
      argc, argv,
      {"natter-stored", "stored",
       [](const natter::Config& c, zmq::context_t& ctx) {
         return std::make_unique<natter::stored::Stored>(c, ctx);
       }});
}
