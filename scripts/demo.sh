#!/usr/bin/env bash
# The main job, on built-in defaults: unmodified programs (python3's
# http.server and curl) talking over an emulated network of partition
# addresses, through shared memory, next to the same pair over kernel TCP.
# Usage: scripts/demo.sh [path/to/libshmnet.so]
set -euo pipefail
cd "$(dirname "$0")/.."
LIB=${1:-target/release/libshmnet.so}
[ -f "$LIB" ] || { echo "demo: $LIB not found; run 'make' first" >&2; exit 1; }
LIB=$(realpath "$LIB")   # the servers run in another directory

PY=$(python3 -c 'import sys; print(sys.executable)')   # the real interpreter, not a shim
WORK=$(mktemp -d /tmp/shmnet-demo.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

ADDR=127.77.0.1 PORT=8080           # a partition address: no interface needed, no NIC touched
TCP_PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/www" "$WORK/dir"
head -c $((64 << 20)) /dev/urandom > "$WORK/www/blob"
WANT=$(sha256sum < "$WORK/www/blob" | cut -c1-16)

shm_env=(env LD_PRELOAD="$LIB" SHMNET_PARTITIONS=127.77.0.0/16 SHMNET_FALLBACK=never SHMNET_DIR="$WORK/dir")

echo "== An emulated network: http.server on $ADDR:$PORT, curl, both preloaded (SHMNET_FALLBACK=never)"
(cd "$WORK/www" && exec "${shm_env[@]}" "$PY" -m http.server --bind $ADDR $PORT >/dev/null 2>&1) &
PIDS+=($!)
(cd "$WORK/www" && exec "$PY" -m http.server --bind 127.0.0.1 "$TCP_PORT" >/dev/null 2>&1) &
PIDS+=($!)
# Up when its rendezvous, an abstract Unix name (docs/security.md), is bound.
for _ in $(seq 50); do grep -q " @shmnet.4/tcp/$ADDR:$PORT\$" /proc/net/unix && break; sleep 0.1; done
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$TCP_PORT/" && break; sleep 0.1; done

echo "   kernel TCP sockets on port $PORT: $(ss -Htan exclude time-wait "( sport = :$PORT or dport = :$PORT )" | wc -l) (none: the listener is a rendezvous in shared memory)"
printf '   a plain curl (not preloaded) to %s:%s: ' $ADDR $PORT
if curl -s -m 2 -o /dev/null "http://$ADDR:$PORT/blob"; then echo "connected?!"; else echo "refused, as it should be"; fi

echo
printf '%-34s %12s %10s %s\n' "transfer of a 64 MiB file" "MB/s" "seconds" "sha256"
for run in 1 2 3; do
  out=$(timeout 60 "${shm_env[@]}" curl -s -o "$WORK/got" -w '%{speed_download} %{time_total}' "http://$ADDR:$PORT/blob")
  printf '%-34s %12.0f %10s %s\n' "shared memory (preloaded) #$run" "$(echo "$out" | awk '{print $1/1e6}')" "$(echo "$out" | awk '{print $2}')" "$(sha256sum < "$WORK/got" | cut -c1-16)"
  out=$(timeout 60 curl -s -o "$WORK/got" -w '%{speed_download} %{time_total}' "http://127.0.0.1:$TCP_PORT/blob")
  printf '%-34s %12.0f %10s %s\n' "kernel TCP loopback (plain) #$run" "$(echo "$out" | awk '{print $1/1e6}')" "$(echo "$out" | awk '{print $2}')" "$(sha256sum < "$WORK/got" | cut -c1-16)"
done
echo "   expected sha256 prefix: $WANT (python's http.server is the bottleneck of both rows)"

echo
echo "== The default mode (no SHMNET_* variables): loopback TCP, accelerated when both ends are preloaded"
DEF_DIR="$WORK/default"   # a private SHMNET_DIR, only so the demo leaves nothing behind
def_env=(env LD_PRELOAD="$LIB" SHMNET_DIR="$DEF_DIR")
DPORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK/www" && exec "${def_env[@]}" "$PY" -m http.server --bind 127.0.0.1 "$DPORT" >/dev/null 2>&1) &
PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$DPORT/" && break; sleep 0.1; done
echo "   http.server preloaded on 127.0.0.1:$DPORT: one kernel TCP listener ($(ss -Htln "( sport = :$DPORT )" | wc -l)) and a shared-memory rendezvous"
printf '%-34s %12s %10s %s\n' "the same 64 MiB file" "MB/s" "seconds" "sha256"
for who in preloaded plain; do
  if [ $who = preloaded ]; then run=("${def_env[@]}" curl); else run=(curl); fi
  out=$(timeout 60 "${run[@]}" -s -o "$WORK/got" -w '%{speed_download} %{time_total}' "http://127.0.0.1:$DPORT/blob")
  printf '%-34s %12.0f %10s %s\n' "curl $who -> 127.0.0.1" "$(echo "$out" | awk '{print $1/1e6}')" "$(echo "$out" | awk '{print $2}')" "$(sha256sum < "$WORK/got" | cut -c1-16)"
done
echo "   how each connect went (the counters in SHMNET_DIR, docs/counters.md):"
"$PY" "$(dirname "$0")/shmnet-counters" "$DEF_DIR" | sed 's/^/     /'
echo "   (the preloaded curl: shm=1; the server: accepted_shm=1; the plain curl went over kernel TCP to the same listener)"
