#!/bin/bash
# bench-fdlimit.sh [--lib LIB] [--conns N] [--from L] [--to L] [--rounds R]
#
# The lowest `ulimit -n` (soft = hard) at which `kvbench --idle N` fits
# every connection (docs/benchmarks.md, "10,000 idle connections at kernel
# TCP's fd limit"): kernel TCP, emulated (SHMNET_FALLBACK=never) and the
# default mode interleaved, each limit from --from to --to, --rounds times.
# One line per run: limit, transport, opened (client), accepted (server),
# checked, and kvbench's error if it fell short. A server fits at a limit
# when "checked" is N; a client when "opened" is N.
# Needs a release library (make bench builds one) and kvbench
# (cc -O2 -Wall -o kvbench tests/bench/kvbench.c; found in $BENCH_DIR or
# built into a temporary directory).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
lib=$here/target/release/libshmnet.so conns=10000 from=10021 to=10029 rounds=1
while [ $# -gt 0 ]; do
  case $1 in
    --lib) lib=$(realpath "$2"); shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --to) to=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--lib LIB] [--conns N] [--from L] [--to L] [--rounds R]" >&2; exit 2 ;;
  esac
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
kv=$tmp/kvbench
cc -O2 -Wall -o "$kv" "$here/tests/bench/kvbench.c"
one() { # MODE LIMIT
  local env=()
  case $1 in
    emulated) env=(LD_PRELOAD="$lib" SHMNET_FALLBACK=never) ;;
    default) env=(LD_PRELOAD="$lib") ;;
  esac
  local out
  out=$(bash -c 'ulimit -n "$1" && shift && exec env "$@"' _ "$2" "${env[@]}" "$kv" --idle "$conns" --secs 1 2>"$tmp/err" || true)
  printf '%s %s %s\n' "$2" "$1" "$(printf '%s' "$out" | python3 -c '
import json, sys
try:
    d = json.loads(sys.stdin.read())
    print(d.get("opened"), d.get("accepted"), d.get("checked"), d.get("error") or "")
except ValueError:
    print("no report")')"
}
for _ in $(seq "$rounds"); do
  for l in $(seq "$from" "$to"); do
    for m in tcp emulated default; do one "$m" "$l"; done
  done
done
