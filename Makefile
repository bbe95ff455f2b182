# libshmnet: build, test, benchmark, demo. See README.md.
CARGO ?= cargo
LOOM_TARGET := target/loom
BENCH_DIR := target/bench

.PHONY: all build deps test fmt-check clippy unit loom bench demo clean

all: build

## Release artifacts: target/release/libshmnet.so
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

unit:
	$(CARGO) test --workspace --profile ci

# loom swaps the ring's atomics for model-checked ones (cfg loom), so it
# builds into its own target dir.
loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=$(LOOM_TARGET) \
		$(CARGO) test -p shmnet-ring --test loom --release

## Ring vs Unix socketpair vs TCP loopback, medians and ratios; then
## nginx + wrk over shared memory vs kernel TCP.
bench: deps
	@mkdir -p $(BENCH_DIR)
	$(CARGO) build --release --workspace
	$(CARGO) bench -p shmnet-ring --bench ringbench | tee $(BENCH_DIR)/ring.md
	scripts/bench-nginx.sh target/release/libshmnet.so 5 | tee $(BENCH_DIR)/nginx.md

## The main job: real programs over the emulated network, then the rings
## side by side with Unix sockets and TCP loopback.
demo: deps
	$(CARGO) build --release --workspace
	scripts/demo.sh target/release/libshmnet.so
	$(CARGO) bench -p shmnet-ring --bench ringbench -- --demo --rtt

clean:
	$(CARGO) clean
