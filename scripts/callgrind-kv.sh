#!/bin/bash
# callgrind-kv.sh LIB [CONNS] [N1] [N2]: user-space instructions per request
# of kvbench's client and server (both preloaded with LIB, SHMNET_FALLBACK=never,
# SHMNET_SPIN_US=0: a spin's length depends on timing) under callgrind, for a
# fixed count of requests (kvbench --reqs, no warm-up): each process's total
# at N1 and at N2 requests, and (I(N2) - I(N1)) / (N2 - N1), which leaves out
# start-up and connecting. Where hardware counters are missing (perf stat:
# "instructions <not supported>" in a VM), this is the deterministic figure
# for comparing two builds (docs/benchmarks.md, "The status files' cost").
# Example: scripts/callgrind-kv.sh target/release/libshmnet.so 50 20000 100000
set -eu
LIB=$(realpath "$1")
CONNS=${2:-50}
N1=${3:-20000}
N2=${4:-100000}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cc -O2 -o "$D/kvbench" "$(dirname "$0")/../tests/bench/kvbench.c"
ir() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }
declare -A CLIENT SERVER
for n in "$N1" "$N2"; do
    mkdir -p "$D/$n"
    SHMNET_PARTITIONS=127.77.90.0/24 SHMNET_FALLBACK=never SHMNET_DIR="$D/dir$n" SHMNET_SPIN_US=0 \
        SHMNET_DEFER=1 LD_PRELOAD="$LIB" valgrind --tool=callgrind --callgrind-out-file="$D/$n/cg.%p" \
        "$D/kvbench" --conns "$CONNS" --reqs "$n" --warmup 0 --secs 600 --tcp 127.77.90.1 \
        >"$D/$n/out.json" 2>"$D/$n/valgrind.log" &
    client=$!
    wait "$client"
    reqs=$(sed -n 's/.*"reqs_total":\([0-9]*\).*/\1/p' "$D/$n/out.json")
    for f in "$D/$n"/cg.*; do
        if [ "${f##*.}" = "$client" ]; then CLIENT[$n]=$(ir "$f"); else SERVER[$n]=$(ir "$f"); fi
    done
    echo "$(basename "$LIB") conns $CONNS: $reqs replies: client ${CLIENT[$n]} server ${SERVER[$n]} instructions"
    R[$n]=$reqs
done
python3 -c "
import sys
n1, n2, c1, c2, s1, s2 = map(int, sys.argv[1:])
print(f'per request ({n2 - n1} more): client {(c2 - c1) / (n2 - n1):.1f}, server {(s2 - s1) / (n2 - n1):.1f}')
" "${R[$N1]}" "${R[$N2]}" "${CLIENT[$N1]}" "${CLIENT[$N2]}" "${SERVER[$N1]}" "${SERVER[$N2]}"
