#!/bin/bash
# callgrind-kv.sh LIB [CONNS] [REQS]: user-space instructions of kvbench's
# client and server (both preloaded with LIB, SHMNET_FALLBACK=never,
# SHMNET_SPIN_US=0: a spin's length depends on timing) under callgrind, for
# a fixed count of requests (kvbench --reqs, no warm-up). Per process: the
# status code's own instructions in send and recv (by source line: the
# counters' cost, the figure to compare), the whole process per request,
# and the read and write exports per call from kvbench's own calls
# (inclusive). The last two depend on timing even here (how many ready
# connections an epoll_wait finds, whether a read finds its peer asleep).
# Where hardware counters are missing (perf stat: "instructions <not
# supported>" in a VM) this is the instruction count to use
# (docs/benchmarks.md, "The status files' cost").
# Example: scripts/callgrind-kv.sh target/release/libshmnet.so 50 20000
set -eu
LIB=$(realpath "$1")
CONNS=${2:-50}
N=${3:-20000}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cc -O2 -o "$D/kvbench" "$(dirname "$0")/../tests/bench/kvbench.c"
SHMNET_PARTITIONS=127.77.90.0/24 SHMNET_FALLBACK=never SHMNET_DIR="$D/dir" SHMNET_SPIN_US=0 \
    SHMNET_DEFER=1 LD_PRELOAD="$LIB" valgrind --tool=callgrind --callgrind-out-file="$D/cg.%p" \
    "$D/kvbench" --conns "$CONNS" --reqs "$N" --warmup 0 --secs 600 --tcp 127.77.90.1 \
    >"$D/out.json" 2>"$D/valgrind.log" &
client=$!
wait "$client"
reqs=$(sed -n 's/.*"reqs_total":\([0-9]*\).*/\1/p' "$D/out.json")
cd "$D"
for f in cg.*; do
    side=server
    [ "${f#cg.}" = "$client" ] && side=client
    # Instructions of the status code (docs/status.md) inlined into the
    # send and recv paths, by their source lines: the counters' own cost.
    status=$(callgrind_annotate --threshold=100 "$f" 2>/dev/null |
        awk '/platform\/status\/.*:shmnet::sockets::conn::(send|recv)::/ {gsub(",", "", $1); s += $1} END {print s + 0}')
    echo "$(basename "$LIB") $side: status code in send/recv: $(python3 -c "print(f'{$status / $reqs:.2f}')") per request"
    callgrind_annotate --tree=caller --inclusive=yes "$f" 2>/dev/null | python3 -c '
import re, sys
side, reqs, lib = sys.argv[1], int(sys.argv[2]), sys.argv[3]
num = lambda s: int(s.replace(",", ""))
total, calls, incl, callers = 0, {}, {}, []
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) .*PROGRAM TOTALS", line)
    if m:
        total = num(m.group(1))
    # "  IR (P%)  < ???:cloop (5,050x) [/tmp/.../kvbench]": a call from
    # kvbench itself (not its pipe helpers read_full, write_full)
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+< \?\?\?:(\w+) \(([\d,]+)x\) \[.*/kvbench\]", line)
    if m and m.group(2) not in ("read_full", "write_full"):
        callers.append((num(m.group(1)), num(m.group(3))))
    m = re.search(r"\*  \S*/abi/exports\.rs:(read|write) \[", line)
    if m:
        op = m.group(1)
        calls[op] = sum(c for _, c in callers)
        incl[op] = sum(i for i, _ in callers)
    if "*  " in line:
        callers = []
per = lambda op: f"{op} {incl.get(op, 0) / max(calls.get(op, 0), 1):.1f} x {calls.get(op, 0)}"
w, r = per("write"), per("read")
print(f"{lib} {side}: {reqs} requests: process {total / reqs:.1f} per request; per call: {w}, {r}")
' "$side" "$reqs" "$(basename "$LIB")"
done
