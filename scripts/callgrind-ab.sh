#!/bin/bash
# callgrind-ab.sh LIB MODE N SIZE: instructions per operation of both
# processes of tests/bench/fixedcount.c under callgrind (both preloaded with
# LIB, SHMNET_FALLBACK=never, no spinning: a spin's length depends on
# timing): the whole process, and inclusive of the send and recv exports.
# Deterministic enough to compare two builds of the library where wall clock
# is noise (docs/benchmarks.md, "The status files' cost").
# Example: scripts/callgrind-ab.sh target/release/libshmnet.so stream 20000 1024
set -eu
LIB=$(realpath "$1")
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cc -O2 -o "$D/fixedcount" "$(dirname "$0")/../tests/bench/fixedcount.c"
SHMNET_PARTITIONS=127.77.90.0/24 SHMNET_FALLBACK=never SHMNET_DIR="$D/dir" SHMNET_SPIN_US=0 \
    LD_PRELOAD="$LIB" valgrind --tool=callgrind --callgrind-out-file="$D/cg.%p" \
    "$D/fixedcount" "$2" "$3" "$4" >/dev/null 2>&1
# (From the source tree callgrind_annotate shows paths of its own.)
cd "$D"
for f in $(ls "$D"/cg.* | sort -t. -k2 -n); do
    total=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    inc=$(callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null)
    send=$(echo "$inc" | grep -E "exports.rs:send \[" | head -1 | awk '{gsub(",", "", $1); print $1}')
    recv=$(echo "$inc" | grep -E "exports.rs:recv \[" | head -1 | awk '{gsub(",", "", $1); print $1}')
    echo "$(basename "$LIB") $2 $3x$4 pid ${f##*.}: per op: process $((total / $3)), send $((${send:-0} / $3)), recv $((${recv:-0} / $3))"
done
