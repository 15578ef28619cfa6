#include "common/daemon.h"
#include "daemons/notifyd/notifyd.h"

int main(int argc, char** argv) {
  return natter::DaemonMain(argc, argv, natter::notifyd::Spec());
}
