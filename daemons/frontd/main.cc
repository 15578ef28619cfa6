#include "common/daemon.h"
#include "daemons/frontd/frontd.h"

int main(int argc, char** argv) {
  return natter::DaemonMain(argc, argv, natter::frontd::Spec());
}
