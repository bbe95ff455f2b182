#!/bin/bash
# bench-hupchurn.sh [--churn M] [--rounds R] [--idle "N1 N2 ..."] LIB...
#
# What one closed connection costs an epoll server holding N idle
# emulated connections (issue 14; docs/benchmarks.md, "Close churn in a
# big epoll set"): tests/bench/hupchurn.c preloaded with each LIB
# (SHMNET_FALLBACK=never), interleaved (every LIB at every N, then the
# next round). Two figures per run:
#  - instructions of the server per churned connection, under callgrind
#    with only the churn instrumented (SHMNET_SPIN_US=0: a spin's length
#    depends on timing), and inside the library's tcp_hangups alone;
#  - task-clock nanoseconds of the server per churned connection, natively
#    (hupchurn's own perf_event_open; noisy on a shared machine).
# Needs valgrind and ulimit -n above 2 N + 100 (raised here to the hard
# limit).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
churn=300 rounds=1 idle="100 1000 10000"
while [ $# -gt 0 ]; do
  case $1 in
    --churn) churn=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --idle) idle=$2; shift 2 ;;
    -*) echo "usage: $0 [--churn M] [--rounds R] [--idle \"N...\"] LIB..." >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--churn M] [--rounds R] [--idle \"N...\"] LIB..." >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hc=$tmp/hupchurn
cc -O2 -Wall -o "$hc" "$here/tests/bench/hupchurn.c"
total() { # FILE: callgrind's total of one file
  callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !/calculated/ {gsub(",", "", $1); print $1}'
}
grind() { # LIB N [TOGGLE]: instructions per churned connection
  local d=$tmp/cg opts=(--instr-atstart=no)
  rm -rf "$d" && mkdir "$d"
  [ $# -gt 2 ] && opts=(--toggle-collect="$3")
  LD_PRELOAD=$1 SHMNET_FALLBACK=never SHMNET_SPIN_US=0 valgrind --tool=callgrind \
    "${opts[@]}" --callgrind-out-file="$d/cg.%p" "$hc" --idle "$2" --churn "$churn" >/dev/null 2>&1
  local sum=0 f t
  for f in "$d"/cg.*; do t=$(total "$f"); sum=$((sum + ${t:-0})); done
  echo $((sum / churn))
}
echo "lib idle server_insn_per_conn tcp_hangups_insn_per_conn task_clock_ns_per_conn"
for _ in $(seq "$rounds"); do
  for n in $idle; do
    for lib in "$@"; do
      lib=$(realpath "$lib")
      all=$(grind "$lib" "$n")
      hup=$(grind "$lib" "$n" '*tcp_hangups*')
      ns=$(LD_PRELOAD=$lib SHMNET_FALLBACK=never "$hc" --idle "$n" --churn $((churn * 10)) |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["ns_per_conn"])')
      echo "$lib $n $all $hup $ns"
    done
  done
done
