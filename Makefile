# natter — build, test and install.  GNU make; see README.md (Building).
#
#   make            bin/: the daemons, natter, natterctl, natter-bench
#   make check      make deps, then build and run every test (tests/run)
#   make run        make deps, build, and start a local cell in ./natter-cell
#   make deps       install the missing Debian packages (as root, where apt
#                   is), or check for the libraries and name what is missing
#   make lint       the man pages (mandoc) and the C++ formatting (clang-format)
#   make format     format the C++ sources and headers as .clang-format says
#   make fuzz, bench, install, install-service, uninstall, clean
#
# Every core is used (-j as many as nproc) unless the command line or
# MAKEFLAGS gives a -j; `make -j1` builds one file at a time.
#
# CXXFLAGS (default -O2 -g), CPPFLAGS, LDFLAGS and LDLIBS are the user's:
# the flags the build needs are in NATTER_CXXFLAGS and NATTER_CPPFLAGS and
# are always used, so `make CXXFLAGS=-O0` still compiles C++17 with every
# warning an error.  SANITIZE=1 builds with AddressSanitizer and
# UndefinedBehaviorSanitizer in build-san/ and bin-san/ (CXXFLAGS there
# defaults to -O1 -g).

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
INITDIR    ?= $(SYSCONFDIR)/init.d

# Parallel unless told otherwise.  GNU make 4.3 hides a command line's -j
# from the makefile but lets it win over this one; MAKEFLAGS from the
# environment is looked at directly.  Not with clean among several goals:
# `make clean all` must clean first.
ifeq ($(filter -j% --jobs%,$(MAKEFLAGS) $(shell printf '%s' "$$MAKEFLAGS")),)
ifeq ($(filter clean,$(MAKECMDGOALS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
endif
endif

CXX        ?= g++
PKGS       := libzmq libsodium libedit
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

NATTER_CXXFLAGS := -std=c++17 -Wall -Wextra -Werror -pthread
NATTER_CPPFLAGS := -I. -DMSGPACK_NO_BOOST
NATTER_LDLIBS   := $(PKG_LIBS) -lleveldb -lboost_program_options
DEPFLAGS        := -MMD -MP

# make check SANITIZE=1: everything built with AddressSanitizer and
# UndefinedBehaviorSanitizer, in folders of its own.
ifeq ($(SANITIZE),1)
CXXFLAGS ?= -O1 -g
# GCC 12 warns falsely (maybe-uninitialized) inside libstdc++ under ASan.
NATTER_CXXFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined \
                   -fno-omit-frame-pointer -Wno-maybe-uninitialized
BUILD    := build-san
BIN      := bin-san
else
CXXFLAGS ?= -O2 -g
BUILD    := build
BIN      := bin
endif

# The user's flags come after the build's, so they can add to them.
compile = $(CXX) $(NATTER_CPPFLAGS) $(CPPFLAGS) $(PKG_CFLAGS) $(DEPFLAGS) $(NATTER_CXXFLAGS) $(CXXFLAGS)
link    = $(CXX) $(NATTER_CXXFLAGS) $(CXXFLAGS) $(LDFLAGS)
libs    = $(NATTER_LDLIBS) $(LDLIBS)

# Debian packages the build and the tests need, and those only make fuzz
# (clang) and make lint (clang-format) need.
DEB_PKGS  := g++ make pkg-config libzmq3-dev cppzmq-dev libmsgpack-cxx-dev \
             libleveldb-dev libsodium-dev libboost-program-options-dev catch2 \
             nlohmann-json3-dev libedit-dev mandoc systemd iproute2 tmux
DEB_TOOLS := clang libclang-rt-14-dev clang-format

# Elsewhere: the headers of the libraries pkg-config does not know (or
# that are headers only), and the commands the tests run.
HEADERS   := zmq.hpp msgpack.hpp leveldb/db.h boost/program_options.hpp \
             catch2/catch.hpp nlohmann/json.hpp
TEST_CMDS := mandoc tmux systemd-analyze

LIB   := $(BUILD)/libnatter.a
CLIENTLIB := $(BUILD)/libnatterclient.a

COMMON_SRC := $(wildcard common/*.cc)
CLIENT_SRC := $(filter-out client/natter_main.cc,$(wildcard client/*.cc))
DAEMONS    := frontd routed stored notifyd
PROGRAMS   := $(addprefix $(BIN)/natter-,$(DAEMONS)) $(BIN)/natter $(BIN)/natterctl $(BIN)/natter-bench

UNIT_SRC   := $(wildcard tests/unit/*.cc)
# What the test programs share (a local cell, a temporary folder); natter-bench
# starts its cells with it too.
TEST_SUPPORT_SRC := $(wildcard tests/support/*.cc)
INTEG_SRC  := $(wildcard tests/integration/*.cc)
DAEMON_LIB_SRC := $(foreach d,$(DAEMONS),$(filter-out daemons/$(d)/main.cc,$(wildcard daemons/$(d)/*.cc)))

MAN_PAGES  := $(wildcard man/*.[1-8])

obj = $(patsubst %.cc,$(BUILD)/%.o,$(1))

.PHONY: all deps deps-apt deps-probe run check test lint format fuzz bench \
        install install-service uninstall clean
# A failed command leaves no half-written file.  The daemons' main.o are
# kept: deleted as intermediate files, the next make compiled and linked
# them again.
.DELETE_ON_ERROR:
.SECONDARY: $(foreach d,$(DAEMONS),$(BUILD)/daemons/$(d)/main.o)
all: $(PROGRAMS)

$(BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(compile) -c $< -o $@

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
	$(link) -o $@ $^ $(libs)

$(BIN)/natter: $(BUILD)/client/natter_main.o $(CLIENTLIB) $(LIB)
	@mkdir -p $(BIN)
	$(link) -o $@ $^ $(libs)

$(BIN)/natterctl: $(call obj,$(wildcard tools/natterctl/*.cc)) $(LIB)
	@mkdir -p $(BIN)
	$(link) -o $@ $^ $(libs)

$(BIN)/natter-bench: $(call obj,$(wildcard tools/bench/*.cc) $(TEST_SUPPORT_SRC)) $(CLIENTLIB) $(LIB)
	@mkdir -p $(BIN)
	$(link) -o $@ $^ $(libs)

$(BUILD)/unit-tests: $(call obj,$(UNIT_SRC) $(TEST_SUPPORT_SRC)) $(BUILD)/daemons.a $(CLIENTLIB) $(LIB)
	$(link) -o $@ $^ $(libs)

$(BUILD)/integration-tests: $(call obj,$(INTEG_SRC) $(TEST_SUPPORT_SRC)) $(BUILD)/daemons.a $(CLIENTLIB) $(LIB)
	$(link) -o $@ $^ $(libs)

$(BUILD)/natter-chaos: $(call obj,tests/chaos/chaos.cc $(TEST_SUPPORT_SRC)) $(CLIENTLIB) $(LIB)
	$(link) -o $@ $^ $(libs)

$(BUILD)/natter-raft-sim: $(call obj,tests/raft_sim/raft_sim.cc) $(BUILD)/daemons.a $(LIB)
	$(link) -o $@ $^ $(libs)

# Where apt-get and dpkg are (Debian and its kin), deps-apt installs what
# is missing (as root; otherwise it names it); elsewhere deps-probe only
# looks.  `make deps HAVE_APT=` takes the second way anywhere.
HAVE_APT := $(shell command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 && echo yes)
deps: $(if $(HAVE_APT),deps-apt,deps-probe)

deps-apt:
	@missing=""; optional=""; \
	for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	for p in $(DEB_TOOLS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || optional="$$optional $$p"; \
	done; \
	if [ -z "$$missing$$optional" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "make deps: installing$$missing$$optional"; \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing $$optional; \
	elif [ -n "$$missing" ]; then \
	  echo "make deps: missing Debian packages:$$missing$$optional (run 'make deps' as root)" >&2; \
	  exit 1; \
	else \
	  echo "make deps: make fuzz and make lint need:$$optional (run 'make deps' as root)" >&2; \
	fi

deps-probe:
	@missing=""; \
	for c in $(firstword $(CXX)) pkg-config; do \
	  command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; \
	done; \
	if command -v pkg-config >/dev/null 2>&1; then \
	  for m in $(PKGS); do pkg-config --exists $$m || missing="$$missing $$m"; done; \
	fi; \
	for h in $(HEADERS); do \
	  echo "#include <$$h>" | $(CXX) $(NATTER_CPPFLAGS) $(CPPFLAGS) $(PKG_CFLAGS) \
	    $(NATTER_CXXFLAGS) $(CXXFLAGS) -E -x c++ - >/dev/null 2>&1 || \
	    missing="$$missing <$$h>"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: missing:$$missing (no apt-get here: install them with the system's package manager)" >&2; \
	  exit 1; \
	fi; \
	absent=""; \
	for c in $(TEST_CMDS); do command -v $$c >/dev/null 2>&1 || absent="$$absent $$c"; done; \
	if [ -n "$$absent" ]; then echo "make deps: make check's tests need:$$absent" >&2; fi

# Start a local cell in ./natter-cell (keys made on first run) and supervise it.
run: deps
	$(MAKE) all
	bin/natterctl up --dir ./natter-cell

check: deps
	$(MAKE) all $(BUILD)/unit-tests $(BUILD)/integration-tests $(BUILD)/natter-chaos \
	  $(BUILD)/natter-raft-sim
	NATTER_BIN=$(abspath $(BIN)) NATTER_BUILD=$(BUILD) tests/run

# Fuzz each decoder of bytes from the network or the disk for FUZZ_SECONDS
# (libFuzzer, with AddressSanitizer and UndefinedBehaviorSanitizer).
FUZZ_SECONDS ?= 30
FUZZ_BUILD   := build-fuzz
FUZZ_CXX     := clang++
FUZZ_FLAGS   := -std=c++17 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -pthread
FUZZ_TARGETS := $(patsubst tests/fuzz/%.cc,%,$(wildcard tests/fuzz/fuzz_*.cc))
FUZZ_LIB_SRC := $(COMMON_SRC) daemons/stored/store.cc daemons/stored/keys.cc \
                daemons/stored/record_cache.cc daemons/stored/raft_log.cc \
                daemons/stored/disk.cc daemons/frontd/zmtp.cc

$(FUZZ_BUILD)/%.o: %.cc
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(NATTER_CPPFLAGS) $(CPPFLAGS) $(PKG_CFLAGS) $(DEPFLAGS) $(FUZZ_FLAGS) \
	  -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(patsubst %.cc,$(FUZZ_BUILD)/%.o,$(FUZZ_LIB_SRC))
	$(FUZZ_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $^ $(libs)

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

# The standard measurements of docs/benchmarks.md (issue 18's table), in
# under ten minutes:
# one JSON line each in BENCH_OUT (bench.jsonl), tables on stderr.
BENCH_OUT ?= bench.jsonl
bench: deps
	$(MAKE) all
	tools/bench/standard $(BIN)/natter-bench > $(BENCH_OUT)
	@echo "results in $(BENCH_OUT)"

# Every C++ source and header, for make format and make lint; Debian's
# clang-format 14 (another version may format a little differently).
CLANG_FORMAT ?= clang-format
CXX_FILES = $(shell find common daemons client tools tests -type f \( -name '*.h' -o -name '*.cc' \) | LC_ALL=C sort)

format:
	$(CLANG_FORMAT) -i $(CXX_FILES)

lint:
	mandoc -Tlint -Wwarning $(MAN_PAGES)
	@echo '$(CLANG_FORMAT) --dry-run --Werror (every .h and .cc)'
	@$(CLANG_FORMAT) --dry-run --Werror $(CXX_FILES) || \
	  { echo "make lint: the code differs from .clang-format; 'make format' formats it" >&2; exit 1; }

# Paths written into the units and init scripts.
SUBST = sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g'
UNITS := $(notdir $(wildcard etc/systemd/*.service etc/systemd/*.target))
INIT_SCRIPTS := $(addprefix natter-,$(DAEMONS))

install: all install-service
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR)
	install -m 755 $(BIN)/natter $(BIN)/natter-bench $(DESTDIR)$(BINDIR)/
	install -m 755 $(addprefix $(BIN)/natter-,$(DAEMONS)) $(BIN)/natterctl $(DESTDIR)$(SBINDIR)/
	for s in $(sort $(subst .,,$(suffix $(MAN_PAGES)))); do \
	  install -d $(DESTDIR)$(MANDIR)/man$$s && \
	  install -m 644 man/*.$$s $(DESTDIR)$(MANDIR)/man$$s/ || exit 1; \
	done

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
	for f in $(MAN_PAGES); do rm -f $(DESTDIR)$(MANDIR)/man$${f##*.}/$${f#man/}; done
	rm -f $(addprefix $(DESTDIR)$(UNITDIR)/,$(UNITS)) $(DESTDIR)$(SYSUSERSDIR)/natter.conf \
	  $(addprefix $(DESTDIR)$(INITDIR)/,$(INIT_SCRIPTS))

clean:
	rm -rf build bin build-san bin-san $(FUZZ_BUILD)

-include $(shell find $(BUILD) $(FUZZ_BUILD) -name '*.d' 2>/dev/null)
