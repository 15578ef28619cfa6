# natter — build, test and install.  GNU make; see README.md.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
INITDIR    ?= $(SYSCONFDIR)/init.d

CXX      ?= g++
PKGS     := libzmq libsodium libedit
CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=c++17 -Wall -Wextra -Werror -pthread
CPPFLAGS += -I. -DMSGPACK_NO_BOOST -MMD -MP $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lleveldb -lboost_program_options -pthread

# make check SANITIZE=1: everything built with AddressSanitizer and
# UndefinedBehaviorSanitizer, in folders of its own.
ifeq ($(SANITIZE),1)
# GCC 12 warns falsely (maybe-uninitialized) inside libstdc++ under ASan.
CXXFLAGS += -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
            -fno-omit-frame-pointer -Wno-maybe-uninitialized
LDFLAGS  += -fsanitize=address,undefined
BUILD    := build-san
BIN      := bin-san
else
BUILD    := build
BIN      := bin
endif

# Debian packages the build and the tests need; `make deps` installs the
# missing ones when run as root.
DEB_PKGS := g++ make pkg-config libzmq3-dev cppzmq-dev libmsgpack-cxx-dev \
            libleveldb-dev libsodium-dev libboost-program-options-dev catch2 \
            nlohmann-json3-dev libedit-dev mandoc clang libclang-rt-14-dev \
            systemd iproute2 tmux

LIB   := $(BUILD)/libnatter.a
CLIENTLIB := $(BUILD)/libnatterclient.a

COMMON_SRC := $(wildcard common/*.cc)
CLIENT_SRC := client/client.cc client/json_events.cc client/local_cell.cc \
              client/chat.cc client/line_editor.cc client/rpc.cc client/token_source.cc \
              client/request_queue.cc client/mailbox_order.cc client/ack_policy.cc
DAEMONS    := frontd routed stored notifyd
PROGRAMS   := $(addprefix $(BIN)/natter-,$(DAEMONS)) $(BIN)/natter $(BIN)/natterctl $(BIN)/natter-bench

UNIT_SRC   := $(wildcard tests/unit/*.cc)
INTEG_SRC  := $(wildcard tests/integration/*.cc)
DAEMON_LIB_SRC := $(foreach d,$(DAEMONS),$(filter-out daemons/$(d)/main.cc,$(wildcard daemons/$(d)/*.cc)))

obj = $(patsubst %.cc,$(BUILD)/%.o,$(1))

.PHONY: all deps run check test lint fuzz bench install install-service uninstall clean
all: $(PROGRAMS)

$(BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(LIB): $(call obj,$(COMMON_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(CLIENTLIB): $(call obj,$(CLIENT_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/daemons.a: $(call obj,$(DAEMON_LIB_SRC))
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BIN)/natter-%: $(BUILD)/daemons/%/main.o $(BUILD)/daemons.a $(LIB)
	@mkdir -p $(BIN)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/natter: $(BUILD)/client/natter_main.o $(CLIENTLIB) $(LIB)
	@mkdir -p $(BIN)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/natterctl: $(call obj,$(wildcard tools/natterctl/*.cc)) $(LIB)
	@mkdir -p $(BIN)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BIN)/natter-bench: $(call obj,$(wildcard tools/bench/*.cc)) $(CLIENTLIB) $(LIB)
	@mkdir -p $(BIN)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(call obj,$(UNIT_SRC)) $(BUILD)/daemons.a $(CLIENTLIB) $(LIB)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/integration-tests: $(call obj,$(INTEG_SRC)) $(BUILD)/daemons.a $(CLIENTLIB) $(LIB)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/natter-chaos: $(call obj,tests/chaos/chaos.cc) $(CLIENTLIB) $(LIB)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "make deps: missing Debian packages:$$missing (run 'make deps' as root)" >&2; exit 1; fi; \
	echo "installing:$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing

# Start a local cell in ./natter-cell (keys made on first run) and supervise it.
run: deps
	$(MAKE) all
	bin/natterctl up --dir ./natter-cell

check: deps
	$(MAKE) all $(BUILD)/unit-tests $(BUILD)/integration-tests $(BUILD)/natter-chaos
	NATTER_BIN=$(abspath $(BIN)) NATTER_BUILD=$(BUILD) tests/run

# Fuzz each decoder of bytes from the network or the disk for FUZZ_SECONDS
# (libFuzzer, with AddressSanitizer and UndefinedBehaviorSanitizer).
FUZZ_SECONDS ?= 30
FUZZ_BUILD   := build-fuzz
FUZZ_CXX     := clang++
FUZZ_FLAGS   := -std=c++17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_TARGETS := $(patsubst tests/fuzz/%.cc,%,$(wildcard tests/fuzz/fuzz_*.cc))
FUZZ_LIB_SRC := $(COMMON_SRC) daemons/stored/store.cc daemons/stored/keys.cc \
                daemons/frontd/zmtp.cc

$(FUZZ_BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(CPPFLAGS) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(patsubst %.cc,$(FUZZ_BUILD)/%.o,$(FUZZ_LIB_SRC))
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzz: deps
	$(MAKE) $(addprefix $(FUZZ_BUILD)/,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	  echo "== $$t for $(FUZZ_SECONDS)s"; \
	  if ! $(FUZZ_BUILD)/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	      -artifact_prefix=$(FUZZ_BUILD)/$$t- $(FUZZ_BUILD)/corpus/$$t \
	      >$(FUZZ_BUILD)/$$t.log 2>&1; then \
	    tail -n 60 $(FUZZ_BUILD)/$$t.log; echo "$$t: failed (see $(FUZZ_BUILD)/$$t.log)"; exit 1; \
	  fi; \
	  grep -E '^(Done|stat::number_of_executed_units)' $(FUZZ_BUILD)/$$t.log; \
	done

test: check

# The standard measurements of docs/benchmarks.md, in under five minutes:
# one JSON line each in BENCH_OUT (bench.jsonl), tables on stderr.
BENCH_OUT ?= bench.jsonl
bench: deps
	$(MAKE) all
	tools/bench/standard $(BIN)/natter-bench > $(BENCH_OUT)
	@echo "results in $(BENCH_OUT)"

lint:
	mandoc -Tlint -Wwarning man/*.[1-8]

# Paths written into the units and init scripts.
SUBST = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'
UNITS := $(notdir $(wildcard etc/systemd/*.service etc/systemd/*.target))
INIT_SCRIPTS := $(addprefix natter-,$(DAEMONS))

install: all install-service
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR)
	install -m 755 $(BIN)/natter $(BIN)/natter-bench $(DESTDIR)$(BINDIR)/
	install -m 755 $(addprefix $(BIN)/natter-,$(DAEMONS)) $(BIN)/natterctl $(DESTDIR)$(SBINDIR)/
	for s in 1 5 7 8; do install -d $(DESTDIR)$(MANDIR)/man$$s; \
	  for f in man/*.$$s; do [ -e "$$f" ] && install -m 644 $$f $(DESTDIR)$(MANDIR)/man$$s/; done; done; true

# The system's side: systemd units, the sysusers.d entry, SysV init
# scripts, and the configuration (only where none is installed yet).
install-service:
	install -d $(DESTDIR)$(SYSCONFDIR)/natter $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	  $(DESTDIR)$(INITDIR) $(DESTDIR)$(SYSCONFDIR)/default
	for u in $(UNITS); do $(SUBST) etc/systemd/$$u >$(DESTDIR)$(UNITDIR)/$$u && \
	  chmod 644 $(DESTDIR)$(UNITDIR)/$$u || exit 1; done
	install -m 644 etc/sysusers.d/natter.conf $(DESTDIR)$(SYSUSERSDIR)/natter.conf
	for d in $(INIT_SCRIPTS); do \
	  $(SUBST) -e "s|@NAME@|$$d|g" \
	    -e "s|@ROLE@|$$(case $$d in *frontd) echo client ingress;; *routed) echo ids and routing;; \
	        *stored) echo storage shards;; *) echo event fan-out;; esac)|" \
	    -e "s|@SHOULD@|$$(case $$d in *frontd|*stored) echo natter-routed natter-notifyd;; \
	        *) echo \$$time;; esac)|" etc/init.d/natter-daemon.in >$(DESTDIR)$(INITDIR)/$$d && \
	  chmod 755 $(DESTDIR)$(INITDIR)/$$d || exit 1; done
	# Configuration is the operator's: never overwritten.
	[ -e $(DESTDIR)$(SYSCONFDIR)/natter/natter.conf ] || \
	  install -m 644 etc/natter.conf $(DESTDIR)$(SYSCONFDIR)/natter/natter.conf
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/natter ] || \
	  $(SUBST) etc/default/natter >$(DESTDIR)$(SYSCONFDIR)/default/natter

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/natter $(DESTDIR)$(BINDIR)/natter-bench $(addprefix $(DESTDIR)$(SBINDIR)/natter-,$(DAEMONS)) $(DESTDIR)$(SBINDIR)/natterctl
	for f in man/*.[1-8]; do rm -f $(DESTDIR)$(MANDIR)/man$${f##*.}/$${f#man/}; done
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) $(DESTDIR)$(SYSUSERSDIR)/natter.conf \
	  $(addprefix $(DESTDIR)$(INITDIR)/,$(INIT_SCRIPTS))

clean:
	rm -rf build bin build-san bin-san $(FUZZ_BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
