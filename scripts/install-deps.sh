#!/usr/bin/env bash
# Installs what `make demo`, `make test` and `make bench` need beyond the Rust toolchain,
# on a fresh Debian machine (run as root, or with sudo available).
# Idempotent: installs only what is missing.
set -euo pipefail

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
# interposer/tests/isolation.rs: sysctl in a test's network namespace,
# unshare (util-linux), useradd (passwd).
command -v sysctl >/dev/null 2>&1 || need_apt+=(procps)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
command -v useradd >/dev/null 2>&1 || need_apt+=(passwd)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
# interposer/tests/isolation.rs and datagrams_default.rs: strace holds a
# client's system call (a connect message, a doorbell) to order events.
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
# interposer/tests/event_servers.rs: nginx (in /usr/sbin, not on every user's PATH)
# and wrk, both run preloaded. sha256sum (coreutils) is always there.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
# interposer/tests/programs.rs: sshd/ssh, iperf3, socat and a JDK
# (java File.java), each run preloaded in both modes.
[ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v iperf3 >/dev/null 2>&1 || need_apt+=(iperf3)
command -v socat >/dev/null 2>&1 || need_apt+=(socat)
command -v java >/dev/null 2>&1 || need_apt+=(default-jdk-headless)
# interposer/tests/datagrams.rs: dnsmasq answering dig, both preloaded (issue
# 16); make bench: sockperf ping-pong and throughput over UDP.
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v sockperf >/dev/null 2>&1 || need_apt+=(sockperf)
# interposer/tests/passing.rs: node's cluster and haproxy's -x reload hand
# sockets to other processes with SCM_RIGHTS, preloaded in both modes.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy)
# interposer/tests/passthrough.rs: jemalloc preloaded beside us (its
# initialisation calls syscall() while holding its own lock).
ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 || need_apt+=(libjemalloc2)
# cli/tests/nic.rs (issue 18): statically linked busybox (httpd, wget,
# ping) in namespaces joined only by `shmnet nic`; iperf3 for make bench-nic.
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need_apt+=(busybox-static)
# make bench (scripts/bench-nginx.sh): nginx over Samba's socket_wrapper,
# TCP emulated over Unix sockets, the bar for small messages (issue 14).
ls /usr/lib/*/libsocket_wrapper.so >/dev/null 2>&1 || need_apt+=(libsocket-wrapper)
# make bench (scripts/bench.py): perf stat counts kvbench's system calls per
# request (tracepoint raw_syscalls:sys_enter); without it that row is skipped.
[ -x /usr/bin/perf ] || command -v perf >/dev/null 2>&1 || need_apt+=(linux-perf)
# make bench-shortconn (scripts/bench-shortconn.sh): Apache's ab, which
# connects non-blocking without keep-alive (issue 14, short connections).
command -v ab >/dev/null 2>&1 || need_apt+=(apache2-utils)
# make bench-gateway (scripts/bench-gateway.py): the gateways' certificates.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# make bench-gateway --delay-ms: offloads off on the delay line's veths.
command -v ethtool >/dev/null 2>&1 || [ -x /usr/sbin/ethtool ] || need_apt+=(ethtool)

if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: apt-get install -y ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: no Rust toolchain found; install one with rustup (https://rustup.rs)" >&2
  exit 1
fi
# fmt and clippy run in `make test`.
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
