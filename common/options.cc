// Every key natter.conf may hold.  natter.conf(5) and etc/natter.conf follow
// this table.
#include "common/config.h"

namespace natter {

const std::vector<OptionSpec> kOptions = {
    // [cell]: what every daemon of the cell must agree on.
    {"cell", "shards", "",
     "The shard map: the endpoints of the stored shards, in order, "
     "separated by spaces.  A user's home shard is a hash of its id over "
     "this list; never reorder it.  A replicated shard is its replicas' "
     "endpoints joined by commas; a removed replica's place is -.  "
     "Replicas may be added or removed while the cell runs (SIGHUP reads "
     "them again); the shards may not."},
    {"cell", "routed", "",
     "Endpoints of natter-routed, separated by spaces; frontds and shards "
     "connect to each."},
    {"cell", "notifyd-in", "",
     "Endpoints where natter-notifyd takes events from the shards."},
    {"cell", "notifyd-out", "",
     "Endpoints where natter-notifyd publishes events to the frontds."},
    {"cell", "token-keys", "/etc/natter/keys/token",
     "Folder of the Ed25519 public keys (*.pub) tokens may be signed with."},
    {"cell", "curve-ipc", "yes",
     "no: the cell's own hops over ipc:// endpoints go without CURVE (one "
     "host, sockets in a private folder); clients keep CURVE.  Every daemon "
     "of the cell must agree."},
    {"cell", "peer-keys", "",
     "Folder of the CURVE public keys (*.pub) of the cell's daemons and "
     "operators: the only keys a daemon's sockets accept, each socket only "
     "the roles that talk to it.  A key's file name gives its role: "
     "frontd, routed, stored, notifyd or admin, alone or followed by - . _ "
     "or @ and anything (stored-1.pub).  Needed when a daemon has a "
     "secret-key."},

    {"frontd", "listen", "tcp://127.0.0.1:7420",
     "Endpoint clients connect to."},
    {"frontd", "secret-key", "",
     "File holding frontd's CURVE secret key (Z85, 40 characters, as "
     "natterctl init writes it); clients need the matching public key.  "
     "Empty: no CURVE on frontd's sockets (for tests on a private host "
     "only)."},
    {"frontd", "max-in-flight", "256",
     "Most requests one client may have unanswered; past it, requests get "
     "a retryable busy error, so a flooding client slows itself, not the "
     "others."},
    {"frontd", "max-clients", "0",
     "Most clients connected at once; past it a new client's handshake is "
     "refused (the client sees a retryable busy error) while connected ones "
     "keep working.  "
     "0: the open-files limit less 64 descriptors kept for the peers."},
    {"frontd", "session-timeout", "60s",
     "A connection silent this long is closed, and its session ends; one "
     "silent for half of it is sent a ZMTP heartbeat, which a live client "
     "answers by itself."},
    {"frontd", "handshake-rate", "0",
     "New client connections admitted a second (as many at once); past it "
     "a handshake is refused busy (a client given several frontds tries "
     "another; one given only this one gets a busy error), so that a storm "
     "of reconnecting clients keeps the connected ones served.  0: no "
     "limit."},
    {"frontd", "drain-timeout", "10s",
     "On SIGTERM frontd drains: it takes no new connection, tells every "
     "device to move to another frontd, answers what is in flight, and "
     "exits once its clients have gone or after this long."},
    {"frontd", "hello-timeout", "5s",
     "A new connection must finish its handshake and say hello (or say it "
     "again once its token has ended) within this, or it is closed."},
    {"frontd", "max-pending", "1024",
     "Most connections without a session at once (handshakes and hellos "
     "under way); past it the oldest of them is closed to make room."},
    {"frontd", "max-pending-per-address", "32",
     "Most connections without a session from one network address (tcp:// "
     "only); past it that address's oldest is closed."},
    {"frontd", "max-sessions-per-user", "32",
     "Most sessions one user may have on this frontd; a hello past it is "
     "refused with busy."},
    {"frontd", "max-queued", "1048576",
     "Most bytes waiting for one client beyond what its socket holds "
     "(256 KiB); a client that reads too slowly for this is cut off."},
    {"frontd", "io-threads", "1",
     "No longer used (1 to 16 accepted): frontd reads and writes its "
     "clients' connections on its own thread."},
    {"frontd", "control", "",
     "Endpoint of the control socket natterctl status and backup talk to "
     "(CURVE as the daemon's other sockets, open to the admin keys of "
     "[cell] peer-keys only).  Empty: none."},
    {"frontd", "metrics-listen", "",
     "Endpoint (tcp://ADDRESS:PORT) where the daemon answers HTTP GET "
     "/metrics in the Prometheus text format.  No authentication: bind it "
     "to loopback or a private network.  Empty: none."},

    {"routed", "listen", "",
     "Endpoint to bind; by default the first of [cell] routed."},
    {"routed", "secret-key", "",
     "File holding routed's CURVE secret key.  Empty: no CURVE."},
    {"routed", "generator", "0",
     "This routed's Snowflake generator number, 0 to 255; unique in the "
     "cell."},
    {"routed", "id-lease", "/var/lib/natter/routed.lease",
     "File where routed records how far its message ids have gone (one "
     "synced write per ten seconds of ids), so that a restart never reuses "
     "an id, even when the clock was set back across it.  Each routed needs "
     "its own.  Empty: no record (ids are then unique only while the clock "
     "does not go back across a restart)."},
    {"routed", "control", "",
     "Endpoint of the control socket natterctl status and backup talk to "
     "(CURVE as the daemon's other sockets, open to the admin keys of "
     "[cell] peer-keys only).  Empty: none."},
    {"routed", "metrics-listen", "",
     "Endpoint (tcp://ADDRESS:PORT) where the daemon answers HTTP GET "
     "/metrics in the Prometheus text format.  No authentication: bind it "
     "to loopback or a private network.  Empty: none."},

    {"stored", "shard", "0", "Which entry of the shard map this is, from 0."},
    {"stored", "replica", "0",
     "Which of the shard's replicas this is, from 0: its place in the "
     "shard's entry of the shard map (endpoints joined by commas)."},
    {"stored", "join", "no",
     "yes: this replica is being added to a running shard (natterctl "
     "replica add): when its log is empty it has no voters of its own and "
     "waits for the leader's database and log.  no: a new shard's replicas "
     "start with every replica of the shard map as a voter.  Only read "
     "while the replica's log is empty."},
    {"stored", "raft-tick", "100",
     "Milliseconds a tick of the replicas' Raft clock lasts: the leader's "
     "heartbeat goes out every tick."},
    {"stored", "log-entries", "100000",
     "The Raft log is compacted once it holds more entries than this (or "
     "64 MiB), down to the newest tenth of them (or 16 MiB) applied; a "
     "replica further behind gets the leader's database."},
    {"stored", "election-ticks", "10",
     "Ticks a follower waits without hearing from its leader before it "
     "calls an election (a random wait of this to twice this)."},
    {"stored", "secret-key", "",
     "File holding the shard's CURVE secret key.  Empty: no CURVE."},
    {"stored", "listen", "",
     "Endpoint to bind; by default this shard's entry of the shard map."},
    {"stored", "data-dir", "/var/lib/natter",
     "Folder of the shards' LevelDB databases; this shard uses "
     "data-dir/shard-N."},
    {"stored", "batch-max", "1024",
     "Most requests written in one batch (one sync)."},
    {"stored", "handoff-retry", "1s",
     "How long a hand-off to another shard waits for its acknowledgement "
     "before it is sent again."},
    {"stored", "user-rate", "50",
     "Units a second each user of the shard may spend on writes: a send "
     "costs one unit and one more for each full KiB of its text, a "
     "reaction or a seen mark one.  A request over the rate gets a "
     "retryable busy error and writes nothing, so one user cannot fill "
     "the shard's disk for everyone.  0: no limit."},
    {"stored", "user-burst", "500",
     "Units a user may spend at once, after being idle: the size of its "
     "bucket, which fills at user-rate.  At least 5 (a send of the "
     "longest text).  0: no limit."},
    {"stored", "control", "",
     "Endpoint of the control socket natterctl status and backup talk to "
     "(CURVE as the daemon's other sockets, open to the admin keys of "
     "[cell] peer-keys only).  Empty: none."},
    {"stored", "metrics-listen", "",
     "Endpoint (tcp://ADDRESS:PORT) where the daemon answers HTTP GET "
     "/metrics in the Prometheus text format.  No authentication: bind it "
     "to loopback or a private network.  Empty: none."},

    {"notifyd", "secret-key", "",
     "File holding notifyd's CURVE secret key.  Empty: no CURVE."},
    {"notifyd", "listen-in", "",
     "Endpoint to take events on; by default the first of [cell] "
     "notifyd-in."},
    {"notifyd", "listen-out", "",
     "Endpoint to publish on; by default the first of [cell] notifyd-out."},
    {"notifyd", "drop-every", "0",
     "For tests only: drop every Nth event instead of publishing it, to "
     "show that devices repair the gaps.  0: drop nothing."},
    {"notifyd", "control", "",
     "Endpoint of the control socket natterctl status and backup talk to "
     "(CURVE as the daemon's other sockets, open to the admin keys of "
     "[cell] peer-keys only).  Empty: none."},
    {"notifyd", "metrics-listen", "",
     "Endpoint (tcp://ADDRESS:PORT) where the daemon answers HTTP GET "
     "/metrics in the Prometheus text format.  No authentication: bind it "
     "to loopback or a private network.  Empty: none."},
};

}  // namespace natter
