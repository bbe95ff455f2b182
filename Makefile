# libshmnet: build, test, benchmark, demo. See README.md.
CARGO ?= cargo
LOOM_TARGET := target/loom
BENCH_DIR := target/bench

.PHONY: all build deps test fmt-check clippy unit loom bench bench-gateway bench-nic bench-shortconn demo clean install uninstall

all: build

## Release artifacts: target/release/libshmnet.so and target/release/shmnet
build:
	$(CARGO) build --release --workspace

deps:
	@scripts/install-deps.sh

## Everything CI runs: formatting, lints, unit/property/cross-process tests, loom models.
test: deps fmt-check clippy unit loom

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The tests' Python programs print to pipes the tests read line by line:
# unbuffered, whatever the environment says (a CI runner may not set it).
unit:
	PYTHONUNBUFFERED=1 $(CARGO) test --workspace --profile ci

# loom swaps the ring's atomics for model-checked ones (cfg loom), so it
# builds into its own target dir.
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=$(LOOM_TARGET) \
		$(CARGO) test -p shmnet-ring --test loom --test dgram_loom --release

## Socket benchmarks through the real LD_PRELOAD path (docs/benchmarks.md):
## tests/bench/sockbench.c preloaded (emulated) vs plain Unix and TCP loopback,
## tests/bench/kvbench.c (epoll key-value server under load, idle connections;
## issue 14, BENCH_ARGS="--no-kv" skips it) and nginx + wrk; prints medians,
## ratios and the issue 6 and 14 targets, writes
## $(BENCH_DIR)/results.json and chart.svg. BENCH_ARGS passes options to
## scripts/bench.py (e.g. BENCH_ARGS="--runs 3 --no-nginx"; A/B against another
## build, interleaved in the same run: BENCH_ARGS="--compare before.so"). The ring-level
## benchmark stays `cargo bench -p shmnet-ring --bench ringbench`.
BENCH_LIB = $(or $(CARGO_TARGET_DIR),target)/release/libshmnet.so
BENCH_PYTHON ?= /usr/bin/python3
BENCH_ARGS ?=
bench: deps
	@test -x $(BENCH_PYTHON) || { echo "make bench: needs Debian's python3 at $(BENCH_PYTHON) (apt-get install -y python3)" >&2; exit 1; }
	@mkdir -p $(BENCH_DIR)
	$(CARGO) build --release -p shmnet-interposer
	$(CC) -O2 -Wall -o $(BENCH_DIR)/sockbench tests/bench/sockbench.c
	$(CC) -O2 -Wall -o $(BENCH_DIR)/kvbench tests/bench/kvbench.c
	$(BENCH_PYTHON) scripts/bench.py --lib $(BENCH_LIB) --out $(BENCH_DIR) $(BENCH_ARGS)
	$(MAKE) --no-print-directory bench-gateway
	$(MAKE) --no-print-directory bench-nic

## Issue 14: short connections, ab without keep-alive against nginx (1
## worker, 1 KiB) over kernel TCP and preloaded in both modes.
## SHORTCONN_LIBS: more libraries to compare (a build before a change).
SHORTCONN_LIBS ?=
bench-shortconn: deps
	$(CARGO) build --release -p shmnet-interposer
	scripts/bench-shortconn.sh --runs 5 $(SHORTCONN_LIBS) target/release/libshmnet.so+sync target/release/libshmnet.so+async

## Issue 17: through both gateways vs direct kernel TCP over a veth, in two
## network namespaces made and removed by the script (needs root).
## GATEWAY_BENCH_ARGS passes options (e.g. "--runs 5 --secs 2"); with
## "--delay-ms 0,1,5" the rows run on the veth, then over links with that
## one-way delay
## (tests/bench/delayline.c between the namespaces: this kernel has no netem).
GATEWAY_BENCH_ARGS ?=
bench-gateway: deps
	@mkdir -p $(BENCH_DIR)
	$(CARGO) build --release -p shmnet-interposer -p shmnet-gateway
	$(CC) -O2 -Wall -o $(BENCH_DIR)/sockbench tests/bench/sockbench.c
	$(CC) -O2 -Wall -o $(BENCH_DIR)/delayline tests/bench/delayline.c
	$(BENCH_PYTHON) scripts/bench-gateway.py --lib $(BENCH_LIB) \
		--gateway $(or $(CARGO_TARGET_DIR),target)/release/shmnet-gateway \
		--sockbench $(BENCH_DIR)/sockbench --out $(BENCH_DIR) $(GATEWAY_BENCH_ARGS)

## The shared-memory NIC (issue 18, docs/nic.md) against a veth pair in the
## same two namespaces: iperf3 TCP throughput, 64 B UDP rate, UDP round trip.
## Needs root. NIC_BENCH_ARGS passes options (e.g. --runs 5 --seconds 5
## --nic-args "--spin-us 50").
NIC_BENCH_ARGS ?=
bench-nic: deps
	@mkdir -p $(BENCH_DIR)
	$(CARGO) build --release -p shmnet-cli
	$(BENCH_PYTHON) scripts/bench-nic.py --shmnet $(or $(CARGO_TARGET_DIR),target)/release/shmnet --out $(BENCH_DIR) $(NIC_BENCH_ARGS)

## The main job: real programs over the emulated network, then the rings
## side by side with Unix sockets and TCP loopback.
demo: deps
	$(CARGO) build --release --workspace
	scripts/demo.sh target/release/libshmnet.so
	$(CARGO) bench -p shmnet-ring --bench ringbench -- --demo --rtt

## Install what `make` built: $(PREFIX)/lib/libshmnet.so, $(PREFIX)/bin/shmnet,
## $(PREFIX)/share/man/man1/shmnet.1 (one page, every subcommand's options,
## generated from the CLI definition); DESTDIR for packagers. The directories
## it had to make are listed in $(PREFIX)/share/shmnet/installed-dirs, so that
## `make uninstall` (same PREFIX/DESTDIR) removes exactly those files and, when
## empty, exactly those directories. INSTALL_LIB/INSTALL_BIN pick other builds
## (the tests install the ci profile's).
PREFIX ?= /usr/local
INSTALL_LIB ?= $(or $(CARGO_TARGET_DIR),target)/release/libshmnet.so
INSTALL_BIN ?= $(or $(CARGO_TARGET_DIR),target)/release/shmnet
LIBDIR = $(DESTDIR)$(PREFIX)/lib
BINDIR = $(DESTDIR)$(PREFIX)/bin
MANDIR = $(DESTDIR)$(PREFIX)/share/man/man1
DATADIR = $(DESTDIR)$(PREFIX)/share/shmnet
MADE_DIRS = $(DATADIR)/installed-dirs
# Paths are quoted: a PREFIX or DESTDIR with a space names one directory,
# never two (`rm -f` of the second would remove whatever it names). The
# list holds paths without DESTDIR, one a line, kept across reinstalls.
install:
	@test -f '$(INSTALL_LIB)' -a -x '$(INSTALL_BIN)' || { echo "make install: $(INSTALL_LIB) or $(INSTALL_BIN) missing: run 'make' first" >&2; exit 1; }
	@made=$$(mktemp) && for d in '$(LIBDIR)' '$(BINDIR)' '$(MANDIR)' '$(DATADIR)'; do \
		while [ ! -d "$$d" ]; do printf '%s\n' "$${d#'$(DESTDIR)'}"; d=$$(dirname "$$d"); done; \
	done > "$$made" && \
	install -d '$(LIBDIR)' '$(BINDIR)' '$(MANDIR)' '$(DATADIR)' && \
	{ cat '$(MADE_DIRS)' 2>/dev/null; cat "$$made"; } | sort -u > '$(MADE_DIRS).tmp' && \
	mv '$(MADE_DIRS).tmp' '$(MADE_DIRS)'; s=$$?; rm -f "$$made"; exit $$s
	install -m 0755 '$(INSTALL_LIB)' '$(LIBDIR)/libshmnet.so'
	install -m 0755 '$(INSTALL_BIN)' '$(BINDIR)/shmnet'
	'$(INSTALL_BIN)' man > '$(MANDIR)/shmnet.1.tmp' && chmod 0644 '$(MANDIR)/shmnet.1.tmp' && mv '$(MANDIR)/shmnet.1.tmp' '$(MANDIR)/shmnet.1'

# The directories deepest first (reverse order puts a/b/c before a/b);
# rmdir leaves one that holds anything else.
uninstall:
	rm -f '$(LIBDIR)/libshmnet.so' '$(BINDIR)/shmnet' '$(MANDIR)/shmnet.1'
	@if [ -f '$(MADE_DIRS)' ]; then \
		dirs=$$(cat '$(MADE_DIRS)'); rm -f '$(MADE_DIRS)'; \
		printf '%s\n' "$$dirs" | sort -r | while IFS= read -r d; do \
			[ -n "$$d" ] && rmdir -- '$(DESTDIR)'"$$d" 2>/dev/null; \
		done; \
	fi; true

clean:
	$(CARGO) clean
