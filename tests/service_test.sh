#!/bin/sh
# The system's side of an installation, as make install-service puts it in
# place: the systemd units pass systemd-analyze verify, and the SysV init
# scripts start a working cell, report it, reload and stop it.
#
# usage: tests/service_test.sh units|init   (from the top of the tree;
# NATTER_BIN names the programs).  Prints what is wrong; exits non-zero.
set -u
what=${1:-}
bin=${NATTER_BIN:-$(pwd)/bin}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
fail() { echo "service_test $what: $*"; exit 1; }

make -s install-service DESTDIR="$root" PREFIX=/usr/local SYSCONFDIR=/etc >/dev/null ||
  fail "make install-service failed"
units=$root/usr/local/lib/systemd/system

case "$what" in
units)
  command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (apt-get install systemd)"
  # systemd-analyze verify --root resolves every path inside the root: the
  # system's own units and the programs the units run go there too.
  mkdir -p "$root/usr/lib/systemd" "$root/usr/bin" "$root/usr/local/sbin"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/" || fail "no /usr/lib/systemd/system"
  # /bin/kill (procps) runs ExecReload; a stand-in where procps is absent.
  if [ -x /usr/bin/kill ]; then cp /usr/bin/kill "$root/usr/bin/kill"; else
    printf '#!/bin/sh\n' >"$root/usr/bin/kill" && chmod 755 "$root/usr/bin/kill"; fi
  [ -e "$root/bin" ] || ln -s usr/bin "$root/bin"
  for d in frontd routed stored notifyd; do cp "$bin/natter-$d" "$root/usr/local/sbin/"; done
  out=$(cd "$root" && systemd-analyze verify --root="$root" --man=no \
    usr/local/lib/systemd/system/*.service usr/local/lib/systemd/system/natter.target 2>&1)
  rc=$?
  [ "$rc" -eq 0 ] && [ -z "$out" ] || fail "systemd-analyze verify (exit $rc): $out"
  # What the issue promises of every service.
  for u in "$units"/*.service; do
    for want in Type=notify User=natter ProtectSystem=strict StateDirectory=natter \
        PartOf=natter.target NoNewPrivileges=yes; do
      grep -q "^$want\$" "$u" || fail "$(basename "$u") lacks $want"
    done
  done
  [ -e "$units/natter-stored@.service" ] || fail "no natter-stored@.service"
  grep -q '^u natter ' "$root/usr/local/lib/sysusers.d/natter.conf" || fail "no sysusers entry"
  ;;
init)
  for d in frontd routed stored notifyd; do
    s=$root/etc/init.d/natter-$d
    sh -n "$s" || fail "natter-$d: not valid sh"
    for field in Provides Required-Start Required-Stop Default-Start Default-Stop Short-Description; do
      sed -n '/^### BEGIN INIT INFO/,/^### END INIT INFO/p' "$s" | grep -q "^# $field:" ||
        fail "natter-$d lacks the LSB header field $field"
    done
  done
  # Running them needs root (they change user) and start-stop-daemon.
  if [ "$(id -u)" != 0 ] || ! command -v start-stop-daemon >/dev/null; then
    echo "service_test init: headers checked; not run (needs root and start-stop-daemon)"
    exit 0
  fi
  "$bin/natterctl" init --dir "$root/cell" --listen "ipc://$root/cell/run/front.sock" \
    >/dev/null 2>&1 || fail "natterctl init failed"
  for d in frontd routed stored notifyd; do
    cat >"$root/etc/default/natter-$d" <<EOF
DAEMON=$bin/natter-$d
NATTER_CONF=$root/cell/natter.conf
NATTER_USER=root
NATTER_RUN=$root/run
NATTER_STATE=$root/state
NATTER_ARGS="--control ipc://$root/cell/run/$d.control"
EOF
  done
  sed -i "s|^NATTER_ARGS=\"--control ipc://$root/cell/run/stored.control\"|NATTER_ARGS=\"--control ipc://$root/cell/run/stored-0.control\"|" \
    "$root/etc/default/natter-stored"
  export NATTER_DEFAULTS="$root/etc/default/natter"
  stop_all() {
    for d in frontd routed stored notifyd; do "$root/etc/init.d/natter-$d" stop >/dev/null 2>&1; done
  }
  trap 'stop_all; rm -rf "$root"' EXIT
  for d in notifyd stored routed frontd; do
    "$root/etc/init.d/natter-$d" start || fail "natter-$d start failed"
  done
  for d in notifyd stored routed frontd; do
    "$root/etc/init.d/natter-$d" status >/dev/null || fail "natter-$d status: not running"
  done
  token=$("$bin/natterctl" token --dir "$root/cell" --user 1) || fail "natterctl token failed"
  "$bin/natter" -c "$root/cell/client.conf" -t "$token" --timeout 20 send 2 "through init scripts" \
    >/dev/null || fail "a message through the cell the init scripts started was not processed"
  # natterctl status with the control socket named: a cell it did not start.
  key=$(cat "$root/cell/keys/routed.pub")
  "$bin/natterctl" status --dir "$root/cell" --json "ipc://$root/cell/run/routed.control@$key" \
    >"$root/status.json" || fail "natterctl status of routed's control socket failed"
  grep -q natter_routed_requests_total "$root/status.json" || fail "no routed metrics in status"
  "$root/etc/init.d/natter-routed" reload || fail "natter-routed reload failed"
  "$root/etc/init.d/natter-routed" status >/dev/null || fail "routed died on reload"
  for d in frontd routed stored notifyd; do
    "$root/etc/init.d/natter-$d" stop || fail "natter-$d stop failed"
  done
  for d in frontd routed stored notifyd; do
    "$root/etc/init.d/natter-$d" status >/dev/null
    [ $? -eq 3 ] || fail "natter-$d status after stop is not 3 (not running)"
  done
  # An invalid configuration is refused at start, with exit 6 (LSB).
  echo "[frontd]" >>"$root/cell/natter.conf"
  echo "no-such-key = 1" >>"$root/cell/natter.conf"
  "$root/etc/init.d/natter-frontd" start 2>/dev/null
  [ $? -eq 6 ] || fail "a bad configuration did not stop natter-frontd start with 6"
  ;;
*)
  echo "usage: tests/service_test.sh units|init" >&2
  exit 64 ;;
esac
echo "service_test $what: ok"
