#include "common/daemon.h"
#include "daemons/routed/routed.h"

int main(int argc, char** argv) {
  return natter::DaemonMain(argc, argv, natter::routed::Spec());
}
