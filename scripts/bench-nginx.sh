#!/usr/bin/env bash
# nginx + wrk requests/s: preloaded on the emulated network vs plain kernel
# TCP on 127.0.0.1, in the same run (a markdown table on stdout).
# Usage: scripts/bench-nginx.sh [path/to/libshmnet.so] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
LIB=$(realpath "${1:-target/release/libshmnet.so}")
SECS=${2:-5}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v wrk >/dev/null && [ -x "$NGINX" ] || { echo "bench-nginx: needs nginx and wrk (scripts/install-deps.sh)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/shmnet-bench.XXXXXX)
chmod 755 "$WORK"
cleanup() { for p in "$WORK"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/www" "$WORK/dir" "$WORK/logs"
head -c 1024 /dev/urandom > "$WORK/www/1k"
head -c $((1 << 20)) /dev/urandom > "$WORK/www/1m"
chmod -R a+rX "$WORK/www"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

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
conf shm 127.77.0.1:8080
conf tcp 127.0.0.1:$PORT
shm=(env LD_PRELOAD="$LIB" SHMNET_PARTITIONS=127.77.0.0/16 SHMNET_FALLBACK=never SHMNET_DIR="$WORK/dir")
"${shm[@]}" "$NGINX" -c "$WORK/shm.conf" -p "$WORK" 2>/dev/null
"$NGINX" -c "$WORK/tcp.conf" -p "$WORK" 2>/dev/null
sleep 0.5

rate() { # url [preload...]
  local url=$1; shift
  "$@" wrk -t2 -c50 -d"${SECS}s" "$url" 2>&1 | awk '/Requests\/sec/ {print $2} /Socket errors/ {print "errors:", $0 > "/dev/stderr"}'
}
echo
echo "## nginx (2 workers) + wrk -t2 -c50 -d${SECS}s, requests/s"
echo
echo "| file | shared memory (preloaded) | kernel TCP (plain) | ratio |"
echo "|---|---:|---:|---:|"
for f in 1k 1m; do
  s=$(rate "http://127.77.0.1:8080/$f" "${shm[@]}")
  t=$(rate "http://127.0.0.1:$PORT/$f" env)
  printf '| %s | %.0f | %.0f | %.2fx |\n' "$f" "$s" "$t" "$(echo "$s $t" | awk '{print $1/$2}')"
done
