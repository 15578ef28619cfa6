#include "common/daemon.h"
#include "daemons/stored/stored.h"

int main(int argc, char** argv) {
  return natter::DaemonMain(argc, argv, natter::stored::Spec());
}
