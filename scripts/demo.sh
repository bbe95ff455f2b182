#!/usr/bin/env bash
# The main job, in under a minute: nginx serving files to curl and wrk,
# preloaded over shared memory next to the same pair plain over kernel TCP
# loopback; `shmnet ss` while a transfer runs; then the default mode (one
# preloaded nginx, a preloaded and a plain client) and its counters.
# Usage: scripts/demo.sh [path/to/libshmnet.so]   (shmnet is found next to it)
set -euo pipefail
cd "$(dirname "$0")/.."
LIB=${1:-target/release/libshmnet.so}
[ -f "$LIB" ] || { echo "demo: $LIB not found; run 'make' first" >&2; exit 1; }
LIB=$(realpath "$LIB")
SHMNET=$(dirname "$LIB")/shmnet
[ -x "$SHMNET" ] || { echo "demo: $SHMNET not found; run 'make' first" >&2; exit 1; }
export SHMNET_LIB=$LIB
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v wrk >/dev/null && command -v curl >/dev/null && [ -x "$NGINX" ] \
  || { echo "demo: needs nginx, wrk and curl (scripts/install-deps.sh)" >&2; exit 1; }
PY=$([ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)

WORK=$(mktemp -d /tmp/shmnet-demo.XXXXXX)
chmod 755 "$WORK"
cleanup() { for p in "$WORK"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/www" "$WORK/dir" "$WORK/default" "$WORK/logs"
chmod 700 "$WORK/dir" "$WORK/default"
head -c 1024 /dev/urandom > "$WORK/www/1k"
head -c $((256 << 20)) /dev/urandom > "$WORK/www/big"
chmod -R a+rX "$WORK/www"
WANT=$(sha256sum < "$WORK/www/big" | cut -c1-16)
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ADDR=127.77.0.1 PORT=8080 TCP_PORT=$(free_port) DEF_PORT=$(free_port)

conf() { # name listen
  cat > "$WORK/$1.conf" <<CONF
worker_processes 2;
daemon on;
error_log $WORK/logs/$1.log warn;
pid $WORK/$1.pid;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $WORK/tmp-$1;
    server { listen $2; root $WORK/www; }
}
CONF
}
conf shm $ADDR:$PORT
conf tcp 127.0.0.1:$TCP_PORT
conf default 127.0.0.1:$DEF_PORT
# The emulated network: partition 127.77.0.0/16, shared memory only.
shm=("$SHMNET" run --partitions 127.77.0.0/16 --fallback never --dir "$WORK/dir" --)
"${shm[@]}" "$NGINX" -c "$WORK/shm.conf" -p "$WORK"
"$NGINX" -c "$WORK/tcp.conf" -p "$WORK"
for _ in $(seq 50); do
  grep -q " @shmnet.5/tcp/$ADDR:$PORT\$" /proc/net/unix && (exec 3<>"/dev/tcp/127.0.0.1/$TCP_PORT") 2>/dev/null && break
  sleep 0.1
done

echo "== nginx (2 workers, sendfile) on $ADDR:$PORT preloaded, and on 127.0.0.1:$TCP_PORT plain"
echo "   kernel TCP sockets on port $PORT: $(ss -Htan "( sport = :$PORT or dport = :$PORT )" | wc -l) (the emulated listener is a shared-memory rendezvous)"
echo
echo "-- curl, a 256 MiB file (sha256 $WANT...)"
printf '%-28s %10s %10s %s\n' "" "MB/s" "seconds" "sha256"
for run in 1 2; do
  for who in shm tcp; do
    if [ $who = shm ]; then cmd=("${shm[@]}" curl); url=http://$ADDR:$PORT/big; label="shared memory (preloaded)"
    else cmd=(curl); url=http://127.0.0.1:$TCP_PORT/big; label="kernel TCP (plain)"; fi
    out=$(timeout 60 "${cmd[@]}" -s -o /dev/null -w '%{speed_download} %{time_total}' "$url")
    printf '%-28s %10.0f %10.3f %s\n' "$label" "$(echo "$out" | awk '{print $1/1e6}')" "$(echo "$out" | awk '{print $2}')" "$(timeout 60 "${cmd[@]}" -s "$url" | sha256sum | cut -c1-16)"
  done
done

echo
echo "-- shmnet ss during a transfer (curl --limit-rate 40M, preloaded)"
"${shm[@]}" curl -s -o /dev/null --limit-rate 40M "http://$ADDR:$PORT/big" &
CURL=$!
sleep 1.5
"$SHMNET" ss --dir "$WORK/dir"
wait $CURL || true

echo
echo "-- wrk -t2 -c50 -d3s, requests/s"
printf '%-28s %12s %12s\n' "" "1 KiB file" "1 MiB of big"
rate() { "$@" 2>/dev/null | awk '/Requests\/sec/ {print $2}'; }
for who in shm tcp; do
  if [ $who = shm ]; then cmd=("${shm[@]}" wrk); base=http://$ADDR:$PORT; label="shared memory (preloaded)"
  else cmd=(wrk); base=http://127.0.0.1:$TCP_PORT; label="kernel TCP (plain)"; fi
  small=$(rate "${cmd[@]}" -t2 -c50 -d3s "$base/1k")
  large=$(rate "${cmd[@]}" -t2 -c50 -d3s -H 'Range: bytes=0-1048575' "$base/big")
  printf '%-28s %12s %12s\n' "$label" "$small" "$large"
done
echo
"$SHMNET" ss -s --dir "$WORK/dir" | sed -n '1,6p;/^connects/p'

echo
echo "== The default mode (no settings): nginx preloaded on 127.0.0.1:$DEF_PORT, clients preloaded or not"
"$SHMNET" run --dir "$WORK/default" -- "$NGINX" -c "$WORK/default.conf" -p "$WORK"
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$DEF_PORT") 2>/dev/null && break; sleep 0.1; done
for who in preloaded plain; do
  if [ $who = preloaded ]; then cmd=("$SHMNET" run --dir "$WORK/default" -- curl); else cmd=(curl); fi
  out=$(timeout 60 "${cmd[@]}" -s -o /dev/null -w '%{speed_download}' "http://127.0.0.1:$DEF_PORT/big")
  printf '   curl %-10s %8.0f MB/s\n' "$who" "$(echo "$out" | awk '{print $1/1e6}')"
done
echo "   the counters (shmnet ss -s): the preloaded curl connected over shared memory (shm); the plain curl"
echo "   reached the same listener over kernel TCP (it is not preloaded: it counts nothing):"
"$SHMNET" ss -s --dir "$WORK/default" | grep -E "^(COUNTER|shm) " | sed 's/^/     /'
