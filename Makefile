# natter — build, test and install.  GNU make; see README.md.

PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc

CXX      ?= g++
PKGS     := libzmq libsodium
CXXFLAGS ?= -O2 -g
CXXFLAGS += -std=c++17 -Wall -Wextra -Werror -pthread
CPPFLAGS += -I. -DMSGPACK_NO_BOOST -MMD -MP $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lleveldb -lboost_program_options -pthread

ifeq ($(SANITIZE),1)
CXXFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS  += -fsanitize=address,undefined
endif

# Debian packages the build and the tests need; `make deps` installs the
# missing ones when run as root.
DEB_PKGS := g++ make pkg-config libzmq3-dev cppzmq-dev libmsgpack-cxx-dev \
            libleveldb-dev libsodium-dev libboost-program-options-dev catch2 \
            nlohmann-json3-dev libedit-dev mandoc

BUILD := build
LIB   := $(BUILD)/libnatter.a
CLIENTLIB := $(BUILD)/libnatterclient.a

COMMON_SRC := $(wildcard common/*.cc)
CLIENT_SRC := client/client.cc client/json_events.cc client/local_cell.cc
DAEMONS    := frontd routed stored notifyd
PROGRAMS   := $(addprefix bin/natter-,$(DAEMONS)) bin/natter bin/natterctl bin/natter-bench

UNIT_SRC   := $(wildcard tests/unit/*.cc)
INTEG_SRC  := $(wildcard tests/integration/*.cc)
DAEMON_LIB_SRC := $(foreach d,$(DAEMONS),$(filter-out daemons/$(d)/main.cc,$(wildcard daemons/$(d)/*.cc)))

obj = $(patsubst %.cc,$(BUILD)/%.o,$(1))

.PHONY: all deps run check test lint install uninstall clean
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

bin/natter-%: $(BUILD)/daemons/%/main.o $(BUILD)/daemons.a $(LIB)
	@mkdir -p bin
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bin/natter: $(BUILD)/client/natter_main.o $(CLIENTLIB) $(LIB)
	@mkdir -p bin
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bin/natterctl: $(call obj,$(wildcard tools/natterctl/*.cc)) $(LIB)
	@mkdir -p bin
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

bin/natter-bench: $(call obj,$(wildcard tools/bench/*.cc)) $(CLIENTLIB) $(LIB)
	@mkdir -p bin
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/unit-tests: $(call obj,$(UNIT_SRC)) $(BUILD)/daemons.a $(CLIENTLIB) $(LIB)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/integration-tests: $(call obj,$(INTEG_SRC)) $(CLIENTLIB) $(LIB)
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
	$(MAKE) all $(BUILD)/unit-tests $(BUILD)/integration-tests
	tests/run

test: check

lint:
	mandoc -Tlint -Wwarning man/*.[1-8]

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(SYSCONFDIR)/natter
	install -m 755 bin/natter bin/natter-bench $(DESTDIR)$(BINDIR)/
	install -m 755 $(addprefix bin/natter-,$(DAEMONS)) bin/natterctl $(DESTDIR)$(SBINDIR)/
	for s in 1 5 7 8; do install -d $(DESTDIR)$(MANDIR)/man$$s; \
	  for f in man/*.$$s; do [ -e "$$f" ] && install -m 644 $$f $(DESTDIR)$(MANDIR)/man$$s/; done; done; true
	[ -e $(DESTDIR)$(SYSCONFDIR)/natter/natter.conf ] || \
	  install -m 644 etc/natter.conf $(DESTDIR)$(SYSCONFDIR)/natter/natter.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/natter $(DESTDIR)$(BINDIR)/natter-bench $(addprefix $(DESTDIR)$(SBINDIR)/natter-,$(DAEMONS)) $(DESTDIR)$(SBINDIR)/natterctl
	for f in man/*.[1-8]; do rm -f $(DESTDIR)$(MANDIR)/man$${f##*.}/$${f#man/}; done

clean:
	rm -rf $(BUILD) bin

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
