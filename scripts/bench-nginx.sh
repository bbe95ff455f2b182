#!/usr/bin/env bash
# Usage: scripts/bench-nginx.sh [--runs N] [--secs S] [--json FILE] [--compare OTHER.so]
#                               [--workers W] [--conns C] [path/to/libshmnet.so] [seconds]
#
# nginx (W=2 workers, sendfile) + wrk -t2 -cC (C=50) requests/s for a 1 KiB and a
# 1 MiB file: both preloaded on the emulated network (127.77.90.1, private
# SHMNET_DIR, SHMNET_FALLBACK=never) vs both plain on kernel TCP
# (127.0.0.1), and, when Debian's libsocket-wrapper is installed, both
# under Samba's socket_wrapper (TCP emulated over Unix sockets: transport
# "unix", 127.0.0.10 in a private SOCKET_WRAPPER_DIR), runs interleaved. Prints every run and a markdown table of
# medians; --json FILE also writes the runs as JSON lines
# ({"transport","file","run","req_per_s","transfer_bytes_per_s","socket_errors","non_2xx",
# "cpu_us_per_req"}); CPU per request is nginx's workers' and wrk's user + system time.
# --compare OTHER.so: a third nginx, preloaded with OTHER.so (port 8081, its
# own SHMNET_DIR), measured next to the first in every run (transport "cmp";
# which of the two goes first alternates from run to run).
# Defaults: 1 run of 5 s, target/release/libshmnet.so.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
RUNS=1 SECS=5 JSON="" CMP="" WORKERS=2 CONNS=50 POS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
    --secs) [ $# -ge 2 ] || usage; SECS=$2; shift 2 ;;
    --json) [ $# -ge 2 ] || usage; JSON=$2; shift 2 ;;
    --compare) [ $# -ge 2 ] || usage; CMP=$2; shift 2 ;;
    --workers) [ $# -ge 2 ] || usage; WORKERS=$2; shift 2 ;;
    --conns) [ $# -ge 2 ] || usage; CONNS=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "bench-nginx: unknown option $1" >&2; usage ;;
    *) POS+=("$1"); shift ;;
  esac
done
[ ${#POS[@]} -le 2 ] || usage
LIB=${POS[0]:-target/release/libshmnet.so}
[ ${#POS[@]} -lt 2 ] || SECS=${POS[1]}
[[ "$RUNS" =~ ^[1-9][0-9]*$ && "$SECS" =~ ^[1-9][0-9]*$ && "$WORKERS" =~ ^[1-9][0-9]*$ && "$CONNS" =~ ^([2-9]|[1-9][0-9]+)$ ]] \
  || { echo "bench-nginx: --runs, --secs and --workers take whole numbers >= 1, --conns >= 2" >&2; exit 2; }
[ -f "$LIB" ] || { echo "bench-nginx: $LIB not found; build it with 'make'" >&2; exit 1; }
LIB=$(realpath "$LIB")
if [ -n "$CMP" ]; then
  [ -f "$CMP" ] || { echo "bench-nginx: --compare $CMP not found" >&2; exit 1; }
  CMP=$(realpath "$CMP")
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v wrk >/dev/null && [ -x "$NGINX" ] || { echo "bench-nginx: needs nginx and wrk (scripts/install-deps.sh)" >&2; exit 1; }
[ -z "$JSON" ] || : > "$JSON" || { echo "bench-nginx: cannot write $JSON" >&2; exit 1; }

ADDR=127.77.90.1 SHM_PORT=8080 CMP_PORT=8081 SW_ADDR=127.0.0.10 SW_PORT=8082
SW_LIB=$(ls /usr/lib/*/libsocket_wrapper.so 2>/dev/null | head -1 || true)
WORK=$(mktemp -d /tmp/shmnet-bench.XXXXXX)
chmod 755 "$WORK"
cleanup() { for p in "$WORK"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/www" "$WORK/dir" "$WORK/dir-cmp" "$WORK/logs" "$WORK/sw"
head -c 1024 /dev/urandom > "$WORK/www/1k"
head -c $((1 << 20)) /dev/urandom > "$WORK/www/1m"
chmod -R a+rX "$WORK/www"
PY=$([ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)   # Debian's, not a pyenv shim
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

conf() { # name listen
  cat > "$WORK/$1.conf" <<CONF
worker_processes $WORKERS;
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
conf shm $ADDR:$SHM_PORT
conf tcp 127.0.0.1:$PORT
# Deferred doorbell flags on (the default) unless SHMNET_DEFER says otherwise.
shm=(env LD_PRELOAD="$LIB" SHMNET_PARTITIONS=127.77.90.0/24 SHMNET_FALLBACK=never SHMNET_DIR="$WORK/dir" SHMNET_DEFER="${SHMNET_DEFER:-1}")
"${shm[@]}" "$NGINX" -c "$WORK/shm.conf" -p "$WORK" 2>"$WORK/logs/shm.start" || { echo "bench-nginx: nginx (preloaded) failed to start:" >&2; cat "$WORK/logs/shm.start" >&2; exit 1; }
if [ -n "$CMP" ]; then
  conf cmp $ADDR:$CMP_PORT
  cmp=(env LD_PRELOAD="$CMP" SHMNET_PARTITIONS=127.77.90.0/24 SHMNET_FALLBACK=never SHMNET_DIR="$WORK/dir-cmp" SHMNET_DEFER="${SHMNET_DEFER:-1}")
  "${cmp[@]}" "$NGINX" -c "$WORK/cmp.conf" -p "$WORK" 2>"$WORK/logs/cmp.start" || { echo "bench-nginx: nginx (preloaded with $CMP) failed to start:" >&2; cat "$WORK/logs/cmp.start" >&2; exit 1; }
fi
"$NGINX" -c "$WORK/tcp.conf" -p "$WORK" 2>"$WORK/logs/tcp.start" || { echo "bench-nginx: nginx failed to start:" >&2; cat "$WORK/logs/tcp.start" >&2; exit 1; }
sw=(env LD_PRELOAD="$SW_LIB" SOCKET_WRAPPER_DIR="$WORK/sw" SOCKET_WRAPPER_DEFAULT_IFACE=11)
if [ -n "$SW_LIB" ]; then
  conf unix $SW_ADDR:$SW_PORT
  "${sw[@]}" "$NGINX" -c "$WORK/unix.conf" -p "$WORK" 2>"$WORK/logs/unix.start" || { echo "bench-nginx: nginx under socket_wrapper failed to start:" >&2; cat "$WORK/logs/unix.start" >&2; exit 1; }
fi
ready=""
for _ in $(seq 50); do
  # The emulated listener's rendezvous: an abstract Unix name (docs/security.md).
  # (The other library may be of another protocol version: any shmnet.N.)
  if grep -q " @shmnet.5/tcp/$ADDR:$SHM_PORT\$" /proc/net/unix && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null \
     && { [ -z "$CMP" ] || grep -Eq " @shmnet\.[0-9]+/tcp/$ADDR:$CMP_PORT\$" /proc/net/unix; } \
     && { [ -z "$SW_LIB" ] || ls "$WORK/sw"/* >/dev/null 2>&1; }; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "bench-nginx: the nginx servers did not come up in 5 s (logs: $WORK/logs)" >&2; cat "$WORK"/logs/*.log >&2; exit 1; }

# CPU clock ticks (user + system) the workers of server $1 (shm, tcp, ...) used so far.
worker_ticks() {
  local t=0 w
  for w in $(pgrep -P "$(cat "$WORK/$1.pid")"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$w/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}

# One wrk run against server $1; prints "req_per_s transfer_bytes_per_s
# socket_errors non_2xx cpu_us_per_req" (CPU: nginx's workers and wrk,
# user + system, per request: on a shared machine a steadier measure than
# requests/s).
rate() { # server url [preload...]
  local server=$1 url=$2; shift 2
  local out before after
  before=$(worker_ticks "$server")
  # `times` gives wrk's CPU (the subshell's children): its second line.
  out=$( ("$@" wrk -t2 -c"$CONNS" -d"${SECS}s" "$url" 2>&1; times) ) || { echo "bench-nginx: wrk failed on $url:" >&2; echo "$out" >&2; exit 1; }
  after=$(worker_ticks "$server")
  local ticks=$((after - before)) hz
  hz=$(getconf CLK_TCK)
  # Which kind (connect, read, write, timeout), when there are any.
  echo "$out" | grep -q "Socket errors" && echo "bench-nginx: $url: $(echo "$out" | grep 'Socket errors')" >&2
  echo "$out" | awk '
    function bytes(s,  n, u) { n = s + 0; u = s; sub(/^[0-9.]+/, "", u)
      return n * (u ~ /^K/ ? 1024 : u ~ /^M/ ? 1048576 : u ~ /^G/ ? 1073741824 : 1) }
    /Requests\/sec/ { r = $2 } /Transfer\/sec/ { t = bytes($2) }
    /Socket errors/ { gsub(/,/, ""); e = $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx/ { n = $NF }
    function secs(s,  m) { m = s; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", s); sub(/s$/, "", s); return m * 60 + s }
    /^[0-9]+m[0-9.]+s [0-9]+m[0-9.]+s$/ { if (++tl == 2) c = secs($1) + secs($2) }
    END { if (r == "") exit 1
      cpu = c + ticks / hz; reqs = r * secs_run
      printf "%s %.0f %d %d %.2f\n", r, t, e, n, (reqs > 0 ? cpu * 1e6 / reqs : 0) }' \
    ticks="$ticks" hz="$hz" secs_run="$SECS" \
    || { echo "bench-nginx: no Requests/sec in wrk output for $url:" >&2; echo "$out" >&2; exit 1; }
}

echo "## nginx ($WORKERS worker(s), sendfile) + wrk -t2 -c$CONNS -d${SECS}s, requests/s, $RUNS run(s)"
echo
declare -A all cpus
for run in $(seq "$RUNS"); do
  order="shm tcp"
  # --compare: the two libraries back to back, the first alternating by run.
  [ -z "$CMP" ] || { [ $((run % 2)) = 1 ] && order="cmp shm tcp" || order="shm cmp tcp"; }
  [ -z "$SW_LIB" ] || order="$order unix"
  for f in 1k 1m; do
    for t in $order; do
      if [ $t = shm ]; then r=$(rate shm "http://$ADDR:$SHM_PORT/$f" "${shm[@]}")
      elif [ $t = cmp ]; then r=$(rate cmp "http://$ADDR:$CMP_PORT/$f" "${cmp[@]}")
      elif [ $t = unix ]; then r=$(rate unix "http://$SW_ADDR:$SW_PORT/$f" "${sw[@]}")
      else r=$(rate tcp "http://127.0.0.1:$PORT/$f" env); fi
      read -r rps xfer errs non2xx cpu <<<"$r"
      echo "run $run: $t $f $rps req/s, $cpu CPU-us/request, socket errors $errs, non-2xx $non2xx"
      all[$t.$f]+="$rps "
      cpus[$t.$f]+="$cpu "
      [ -z "$JSON" ] || printf '{"transport":"%s","file":"%s","run":%d,"req_per_s":%s,"transfer_bytes_per_s":%s,"socket_errors":%d,"non_2xx":%d,"cpu_us_per_req":%s}\n' \
        "$t" "$f" "$run" "$rps" "$xfer" "$errs" "$non2xx" "$cpu" >> "$JSON"
    done
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
echo "| file | shared memory (preloaded) | kernel TCP (plain) | ratio |"
echo "|---|---:|---:|---:|"
for f in 1k 1m; do
  s=$(median <<<"${all[shm.$f]}") t=$(median <<<"${all[tcp.$f]}")
  printf '| %s | %.0f | %.0f | %.2fx |\n' "$f" "$s" "$t" "$(echo "$s $t" | awk '{print $1/$2}')"
done
if [ -n "$SW_LIB" ]; then
  echo
  echo "| file | shared memory (preloaded) | Unix sockets (socket_wrapper) | ratio |"
  echo "|---|---:|---:|---:|"
  for f in 1k 1m; do
    s=$(median <<<"${all[shm.$f]}") u=$(median <<<"${all[unix.$f]}")
    printf '| %s | %.0f | %.0f | %.2fx |\n' "$f" "$s" "$u" "$(echo "$s $u" | awk '{print $1/$2}')"
  done
fi
echo
echo "CPU per request (nginx's workers and wrk, user + system, µs; medians):"
echo
echo "| file | shared memory | kernel TCP |$([ -n "$SW_LIB" ] && echo " Unix sockets |") TCP / shm |$([ -n "$SW_LIB" ] && echo " Unix / shm |")"
echo "|---|---:|---:|$([ -n "$SW_LIB" ] && echo "---:|")---:|$([ -n "$SW_LIB" ] && echo "---:|")"
for f in 1k 1m; do
  s=$(median <<<"${cpus[shm.$f]}") t=$(median <<<"${cpus[tcp.$f]}")
  if [ -n "$SW_LIB" ]; then
    u=$(median <<<"${cpus[unix.$f]}")
    printf '| %s | %.1f | %.1f | %.1f | %.2fx | %.2fx |\n' "$f" "$s" "$t" "$u" "$(echo "$t $s" | awk '{print $1/$2}')" "$(echo "$u $s" | awk '{print $1/$2}')"
  else
    printf '| %s | %.1f | %.1f | %.2fx |\n' "$f" "$s" "$t" "$(echo "$t $s" | awk '{print $1/$2}')"
  fi
done
if [ -n "$CMP" ]; then
  echo
  echo "| file | --compare $(basename "$CMP") (preloaded) | $(basename "$LIB") (preloaded) | ratio |"
  echo "|---|---:|---:|---:|"
  for f in 1k 1m; do
    c=$(median <<<"${all[cmp.$f]}") s=$(median <<<"${all[shm.$f]}")
    printf '| %s | %.0f | %.0f | %.2fx |\n' "$f" "$c" "$s" "$(echo "$s $c" | awk '{print $1/$2}')"
  done
fi
