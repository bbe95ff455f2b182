#!/usr/bin/env bash
# Usage: scripts/bench-shortconn.sh [--runs N] [--requests N] [--workers N] [--concurrency N] LIB.so [OTHER.so ...]
#
# Short connections (issue 14): ab -n N -c 10 (or --concurrency N) without keep-alive against
# nginx (1 worker, or --workers N) serving a 1 KiB file, runs interleaved:
#   tcp        both plain, kernel TCP on 127.0.0.1
#   emu:LIB    both preloaded with LIB, emulated network (127.77.91.1,
#              SHMNET_FALLBACK=never, private SHMNET_DIR)
#   dflt:LIB   both preloaded with LIB, default mode (127.0.0.1: loopback
#              acceleration with TCP fallback)
# for every LIB given (a build before a change and one after, say);
# LIB.so+async runs LIB with SHMNET_ASYNC_CONNECT=1 (decision 32; off by
# default), LIB.so+sync with SHMNET_ASYNC_CONNECT=0 (the default).
# Prints one line per run and the median requests/s of each.
# Needs nginx and ab (apache2-utils).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=3 N=20000 WORKERS=1 C=10 LIBS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --requests) N=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --concurrency) C=$2; shift 2 ;;
    -*) sed -n '2,17p' "$0" >&2; exit 2 ;;
    *+async) LIBS+=("$(realpath "${1%+async}")+async"); shift ;;
    *+sync) LIBS+=("$(realpath "${1%+sync}")+sync"); shift ;;
    *) LIBS+=("$(realpath "$1")"); shift ;;
  esac
done
[ ${#LIBS[@]} -ge 1 ] || { sed -n '2,17p' "$0" >&2; exit 2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v ab >/dev/null && [ -x "$NGINX" ] || { echo "bench-shortconn: needs nginx and ab (apt-get install -y nginx apache2-utils)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/shmnet-shortconn.XXXXXX)
chmod 755 "$WORK"
cleanup() { for p in "$WORK"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/www" "$WORK/logs"
head -c 1024 /dev/urandom > "$WORK/www/1k"
chmod -R a+rX "$WORK/www"
PY=$([ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # name listen env...
  local name=$1 listen=$2; shift 2
  cat > "$WORK/$name.conf" <<CONF
worker_processes $WORKERS;
daemon on;
error_log $WORK/logs/$name.log warn;
pid $WORK/$name.pid;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $WORK/tmp-$name;
    server { listen $listen; root $WORK/www; }
}
CONF
  env "$@" "$NGINX" -c "$WORK/$name.conf" -p "$WORK" 2>"$WORK/logs/$name.start" \
    || { echo "bench-shortconn: nginx $name failed:" >&2; cat "$WORK/logs/$name.start" >&2; exit 1; }
}

NAMES=() URLS=() ENVS=()
port=$(free_port)
start tcp "127.0.0.1:$port" X=1
NAMES+=(tcp) URLS+=("http://127.0.0.1:$port/1k") ENVS+=("X=1")
i=0
for lib in "${LIBS[@]}"; do
  i=$((i + 1))
  mkdir -p "$WORK/dir$i"
  extra=""
  case "$lib" in
    *+async) lib=${lib%+async} extra=" SHMNET_ASYNC_CONNECT=1" ;;
    *+sync) lib=${lib%+sync} extra=" SHMNET_ASYNC_CONNECT=0" ;;
  esac
  e="LD_PRELOAD=$lib SHMNET_PARTITIONS=127.77.91.0/24 SHMNET_FALLBACK=never SHMNET_DIR=$WORK/dir$i$extra"
  start "emu$i" "127.77.91.1:$((8090 + i))" $e
  NAMES+=("emu:$i") URLS+=("http://127.77.91.1:$((8090 + i))/1k") ENVS+=("$e")
  port=$(free_port)
  e="LD_PRELOAD=$lib$extra"
  start "dflt$i" "127.0.0.1:$port" $e
  NAMES+=("dflt:$i") URLS+=("http://127.0.0.1:$port/1k") ENVS+=("$e")
done
sleep 0.5
for k in "${!NAMES[@]}"; do : > "$WORK/res.$k"; done
for r in $(seq 1 "$RUNS"); do
  for k in "${!NAMES[@]}"; do
    rps=$(env ${ENVS[$k]} ab -q -n "$N" -c "$C" "${URLS[$k]}" 2>&1 | awk '/Requests per second/ {print $4} /Failed requests/ {f=$3} END {if (f+0 > 0) print "failed " f > "/dev/stderr"}')
    echo "run $r ${NAMES[$k]} $rps"
    echo "$rps" >> "$WORK/res.$k"
  done
done
echo "| transport | median requests/s | vs kernel TCP |"
echo "|---|---:|---:|"
tcp=$(sort -n "$WORK/res.0" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
for k in "${!NAMES[@]}"; do
  m=$(sort -n "$WORK/res.$k" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  lib=""
  case "${NAMES[$k]}" in *:*) lib=" (${LIBS[$(( ${NAMES[$k]#*:} - 1 ))]})" ;; esac
  echo "| ${NAMES[$k]%%:*}$lib | $m | $(awk -v a="$m" -v b="$tcp" 'BEGIN {printf "%.2fx", a/b}') |"
done
