#!/usr/bin/python3
"""Usage: scripts/bench.py [--lib PATH] [--sockbench PATH] [--kvbench PATH] [--out DIR] [--runs N]
                          [--secs S] [--kv-secs S] [--idle-conns N] [--nginx-secs S] [--spin-us US]
                          [--no-nginx] [--no-kv] [--no-udp] [--no-defer] [--note TEXT]
                          [--compare OTHER.so [--compare-name NAME] [--name NAME]]

The socket-level benchmark behind `make bench` (issue 6): every figure is
measured through ordinary socket programs, the emulated ones through the real
LD_PRELOAD path. tests/bench/sockbench.c (rtt, stream, connrate, floor) runs
preloaded on the emulated network (127.77.90.1, SHMNET_FALLBACK=never, a
private SHMNET_DIR per run) and plain over Unix stream sockets and TCP
loopback; scripts/bench-nginx.sh measures nginx + wrk. Runs are interleaved
(run 1 of every case, then run 2, ...) and medians are reported.

Issue 14 (skipped with --no-kv): tests/bench/kvbench.c, an epoll key-value
server and an epoll load client, emulated vs Unix vs TCP at 1, 50, 200 and
1000 connections (one request outstanding each) and 50 connections with 16
outstanding, requests/s and CPU per request, in the same interleaved runs;
once per run the 50-connection case again under `perf stat -e
raw_syscalls:sys_enter` (emulated and TCP; system calls of both processes
over the timed part / requests answered in it); and once per invocation
kvbench --idle (--idle-conns, default 10000) for every transport.

Issue 16 (skipped with --no-udp): scripts/bench_udp.py, sockperf ping-pong
and throughput over UDP, emulated vs kernel UDP vs a Unix datagram
socketpair.

Prints markdown tables (medians, ratios, issue 6 and issue 14 targets
met/missed) and writes DIR/results.json, DIR/bench.md and DIR/chart.svg
(default target/bench).
Exits 1 if any run failed (hang, wrong bytes, crash): the failing command is
printed so it can be rerun by hand.

--compare OTHER.so (A/B, e.g. before/after a refactor): every emulated figure
(sockbench preloaded, nginx preloaded) is measured for both libraries in the
same invocation, back to back within each run (OTHER first in odd runs, --lib
first in even runs), baselines (floor, Unix, TCP) once per run as without it.
The report for --lib is printed as usual, followed by a side-by-side table:
each figure's median and min - max over the runs for both libraries, the
ratio --lib / OTHER, the per-run ratios (each pair measured back to back) and
in how many runs --lib was the better one. results.json gets a "compare"
section.

Only the Python standard library is used.
"""

import argparse
import bench_udp
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU_ADDR = "127.77.90.1"
EMU_PARTITIONS = "127.77.90.0/24"

# transport key -> (label, how it runs)
TRANSPORTS = {
    "floor": "raw shared memory (floor)",
    "shm": "emulated (spin {spin})",
    "shm0": "emulated (SHMNET_SPIN_US=0)",
    "unix": "Unix stream socket",
    "tcp": "TCP loopback",
}
EMULATED = ("shm", "shm0")  # the transports that go through libshmnet.so
COLORS = {"floor": "#7f7f7f", "shm": "#d62728", "shm0": "#ff7f0e", "unix": "#1f77b4", "tcp": "#2ca02c"}
# The issue 6 figures are 64 B and 4 KiB round trips and 64 B, 1 KiB and 64 KiB
# writes; the sizes between are there for the chart.
RTT_SIZES = [64, 1024, 4096, 16384]
STREAM_SIZES = [64, 1024, 4096, 16384, 65536]
# Issue 14 (kvbench): (connections, requests outstanding per connection).
KV_LEVELS = [(1, 1), (50, 1), (200, 1), (1000, 1), (50, 16)]
KV_TRANSPORTS = ("shm", "unix", "tcp")
KV_LABELS = {"shm": "emulated", "unix": "Unix stream socket", "tcp": "TCP loopback"}
KV_SYSCALL_LEVEL = (50, 1)  # measured under perf stat once per run, emulated and TCP
KV_TARGET_LEVELS = (50, 200, 1000)  # throughput targets: >= 1.5x TCP, >= 1.3x Unix (pipeline 1)
PERF = shutil.which("perf") or "/usr/bin/perf"
PERF_STATUS = {"ok": False, "note": "not checked"}


def fail(msg):
    sys.stderr.write("bench: " + msg + "\n")
    sys.exit(1)


def parse_args():
    p = argparse.ArgumentParser(usage=" ".join(__doc__.split("\n\n")[0][len("Usage: "):].split()),
                                description="libshmnet socket benchmarks (make bench)")
    p.add_argument("--lib", default=os.path.join(ROOT, "target/release/libshmnet.so"))
    p.add_argument("--sockbench", default=None, help="default: OUT/sockbench")
    p.add_argument("--out", default=os.path.join(ROOT, "target/bench"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--secs", type=float, default=0.5, help="timed part of each socket run")
    p.add_argument("--nginx-secs", type=int, default=3, help="wrk duration per run")
    p.add_argument("--spin-us", default=None,
                   help="SHMNET_SPIN_US for the spinning emulated runs (default: unset, the library default)")
    p.add_argument("--no-nginx", action="store_true")
    p.add_argument("--no-udp", action="store_true",
                   help="skip the UDP rows (issue 16: sockperf, scripts/bench_udp.py)")
    p.add_argument("--kvbench", default=None, help="default: OUT/kvbench")
    p.add_argument("--no-kv", action="store_true", help="skip the kvbench rows (issue 14)")
    p.add_argument("--no-defer", action="store_true",
                   help="emulated runs with SHMNET_DEFER=0 (every doorbell flag kept up)")
    p.add_argument("--kv-secs", type=float, default=0.5, help="timed part of each kvbench run")
    p.add_argument("--idle-conns", type=int, default=10000,
                   help="kvbench --idle: connections held open, once per invocation (0: skip)")
    p.add_argument("--note", default="", help="free text stored in results.json and printed (e.g. which build)")
    p.add_argument("--compare", default=None, metavar="OTHER.so",
                   help="also measure every emulated figure with this library, interleaved run by run")
    p.add_argument("--compare-name", default=None,
                   help="label of --compare in the tables (default: its file name without .so)")
    p.add_argument("--name", default=None, help="label of --lib in the comparison (default: 'current')")
    a = p.parse_args()
    a.sockbench = a.sockbench or os.path.join(a.out, "sockbench")
    a.kvbench = a.kvbench or os.path.join(a.out, "kvbench")
    if a.runs < 1 or a.secs <= 0 or a.kv_secs <= 0 or a.idle_conns < 0:
        fail("--runs must be >= 1, --secs and --kv-secs > 0, --idle-conns >= 0")
    need = [(a.lib, "libshmnet.so (build it with 'make')"),
            (a.sockbench, "sockbench (cc -O2 -o target/bench/sockbench tests/bench/sockbench.c)")]
    if not a.no_kv:
        need.append((a.kvbench, "kvbench (cc -O2 -o target/bench/kvbench tests/bench/kvbench.c), or --no-kv"))
    for path, what in need:
        if not os.path.isfile(path):
            fail(f"{path} not found: {what}")
    a.lib = os.path.abspath(a.lib)
    a.sockbench = os.path.abspath(a.sockbench)
    a.kvbench = os.path.abspath(a.kvbench)
    if a.compare is not None:
        if not os.path.isfile(a.compare):
            fail(f"--compare {a.compare} not found")
        a.compare = os.path.abspath(a.compare)
        a.compare_name = a.compare_name or os.path.basename(a.compare).removesuffix(".so")
        a.name = a.name or "current"
        if a.compare_name == a.name:
            fail(f"--compare-name and --name are both '{a.name}': give them different labels")
    elif a.compare_name is not None or a.name is not None:
        fail("--compare-name and --name only go with --compare")
    return a


def probe_perf():
    """Can perf stat count raw_syscalls:sys_enter here (and start disabled,
    for kvbench's window)? Fills PERF_STATUS."""
    if not os.access(PERF, os.X_OK):
        PERF_STATUS.update(ok=False, note=f"no perf at {PERF} (apt-get install -y linux-perf): "
                                          "system calls per request not measured")
        return
    try:
        p = subprocess.run([PERF, "stat", "-x,", "-D", "-1", "-e", "raw_syscalls:sys_enter", "--", "true"],
                           capture_output=True, text=True, timeout=30)
        ok = p.returncode == 0 and "raw_syscalls:sys_enter" in p.stderr and "not supported" not in p.stderr
        note = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
    except (OSError, subprocess.SubprocessError) as e:
        ok, note = False, str(e)
    PERF_STATUS.update(ok=ok, note=(f"{PERF} stat -e raw_syscalls:sys_enter" if ok else
                                    f"perf stat cannot count raw_syscalls:sys_enter here ({note}): "
                                    "system calls per request not measured"))


def default_spin():
    # docs/configuration.md: SHMNET_SPIN_US defaults to 50.
    return "50 us, default"


class Runner:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.failures = []
        self.count = 0

    def transport_env(self, transport, lib=None):
        """Returns (env additions, address arguments) for a sockbench or kvbench run
        over `transport` (lib: default --lib)."""
        env = {}
        if transport in ("shm", "shm0"):
            self.count += 1
            # Not created here: libshmnet creates it, which proves the run
            # went through the library (a bad setting would silently
            # measure kernel TCP on 127.77.90.1 instead).
            d = os.path.join(self.tmp, f"dir{self.count}")
            env = {"LD_PRELOAD": lib or self.args.lib, "SHMNET_FALLBACK": "never",
                   "SHMNET_PARTITIONS": EMU_PARTITIONS, "SHMNET_DIR": d}
            if transport == "shm0":
                env["SHMNET_SPIN_US"] = "0"
            elif self.args.spin_us is not None:
                env["SHMNET_SPIN_US"] = str(self.args.spin_us)
            # Deferred flags (on by default, docs/configuration.md), said
            # explicitly so the figures name what they measured.
            env["SHMNET_DEFER"] = "0" if self.args.no_defer else "1"
            return env, ["--tcp", EMU_ADDR]
        if transport == "unix":
            return env, ["--unix", os.path.join(self.tmp, "unix.sock")]
        if transport == "tcp":
            return env, ["--tcp", "127.0.0.1"]
        return env, []

    def command(self, transport, mode, size, secs, extra=(), lib=None):
        """Returns (env additions, argv) for one sockbench run (lib: default --lib)."""
        env, addr = self.transport_env(transport, lib)
        return env, [self.args.sockbench, mode, "--size", str(size), "--secs", str(secs), *extra, *addr]

    def run(self, transport, mode, size, secs=None, extra=(), lib=None):
        secs = self.args.secs if secs is None else secs
        if transport == "floor":
            mode = "floor"
        env, argv = self.command(transport, mode, size, secs, extra, lib)
        return self.execute(env, argv, secs)

    def run_kv(self, transport, conns=1, pipeline=1, idle=None, lib=None, perf=False):
        """One kvbench run: load (conns, pipeline) or --idle N. perf: count the
        system calls of both processes over the timed part (perf stat,
        raw_syscalls:sys_enter, enabled and disabled by kvbench through perf's
        control FIFOs) and add "syscalls" and "syscalls_per_req"."""
        env, addr = self.transport_env(transport, lib)
        secs = self.args.kv_secs if idle is None else 1
        argv = [self.args.kvbench, *(["--idle", str(idle)] if idle else
                                     ["--conns", str(conns), "--pipeline", str(pipeline)]),
                "--secs", str(secs), *addr]
        if not perf:
            return self.execute(env, argv, secs)
        ctl, ack, out = (os.path.join(self.tmp, f) for f in ("perf.ctl", "perf.ack", "perf.out"))
        for f in (ctl, ack, out):
            if os.path.lexists(f):
                os.unlink(f)
        os.mkfifo(ctl)
        os.mkfifo(ack)
        # perf itself is not preloaded: the library's settings go through env(1).
        wrapped = [PERF, "stat", "-x,", "-D", "-1", "--control", f"fifo:{ctl},{ack}",
                   "-e", "raw_syscalls:sys_enter", "-o", out, "--",
                   "env", *[f"{k}={v}" for k, v in env.items()], *argv, "--perf-ctl", f"{ctl},{ack}"]
        r = self.execute(env, wrapped, secs, preload=False,
                         setup="rm -f /tmp/sockbench-repro/perf.ctl /tmp/sockbench-repro/perf.ack && "
                               "mkfifo /tmp/sockbench-repro/perf.ctl /tmp/sockbench-repro/perf.ack && ")
        if r is None:
            return None
        shown = " ".join(wrapped).replace(self.tmp, "/tmp/sockbench-repro")
        try:
            line = [x for x in open(out) if "raw_syscalls:sys_enter" in x][0]
            r["syscalls"] = int(line.split(",")[0])
        except (OSError, IndexError, ValueError):
            return self.failed(shown, "no syscall count from perf stat: "
                                      + (open(out).read().strip() if os.path.exists(out) else "no output"))
        if not r.get("perf_window") or not r.get("reqs"):
            return self.failed(shown, f"kvbench did not open perf's window or made no requests: {r}")
        r["syscalls_per_req"] = r["syscalls"] / r["reqs"]
        return r

    def execute(self, env, argv, secs, preload=True, setup=""):
        """Runs argv with env added (preload False: env is not passed, argv
        carries it itself); returns its last stdout line as JSON, or None after
        recording the failure with a command line to rerun it by hand."""
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("SHMNET_") and k != "LD_PRELOAD"}
        if preload:
            full_env.update(env)
        # A command line to rerun by hand (the temporary directory is gone by then).
        shown = ("mkdir -p /tmp/sockbench-repro && " + setup
                 + " ".join(([f"{k}={v}" for k, v in env.items()] if preload else []) + argv)
                 .replace(self.tmp, "/tmp/sockbench-repro"))
        limit = secs + 40
        try:
            p = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as e:
            err = (e.stderr or b"")
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            return self.failed(shown, f"hung: no result after {limit:.0f} s. {err.strip()}")
        if p.returncode != 0:
            why = f"signal {-p.returncode}" if p.returncode < 0 else f"exit status {p.returncode}"
            return self.failed(shown, f"{why}: {p.stderr.strip()}")
        if "libshmnet:" in p.stderr:
            return self.failed(shown, f"libshmnet complained: {p.stderr.strip()}")
        if "SHMNET_DIR" in env and not os.path.isdir(env["SHMNET_DIR"]):
            return self.failed(shown, "libshmnet never created SHMNET_DIR: the run did not go "
                                      "through the library (is LD_PRELOAD working?)")
        try:
            return json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return self.failed(shown, f"unreadable output {p.stdout!r} {p.stderr.strip()}")

    def failed(self, shown, why):
        self.failures.append({"command": shown, "error": why})
        sys.stderr.write(f"bench: FAILED: {shown}\n       {why}\n")
        return None


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def fmt(x, digits=2):
    if x is None:
        return "FAILED"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fx(x):
    return "-" if x is None else f"{x:.2f}x"


def measure_sockets(args, runner):
    """All socket figures; returns {figure: [values per run]} and the raw
    results ({case: [kvbench or sockbench JSON per run]}; a case's key is its
    figure's, except kvbench cases, which give two figures each)."""
    cases = []  # (case key, transport, run(lib) -> result, {figure key: result field})

    def sock(key, t, mode, size, field):
        cases.append((key, t, lambda lib: runner.run(t, mode, size, lib=lib), {key: field}))

    for size in RTT_SIZES:
        for t in ("floor", "shm", "shm0", "unix", "tcp"):
            sock(f"rtt/{t}/{size}", t, "rtt", size, "rtt_us")
    sock("rtt/floor/0", "floor", "floor", 0, "rtt_us")
    for size in STREAM_SIZES:
        for t in ("shm", "unix", "tcp"):
            sock(f"stream/{t}/{size}", t, "stream", size, "gbps")
    for t in ("shm", "unix", "tcp"):
        sock(f"connrate/{t}", t, "connrate", 64, "per_s")
    if not args.no_kv:
        # Issue 14: kvbench, (connections, pipeline) per KV_LEVELS.
        for conns, pipe in KV_LEVELS:
            for t in KV_TRANSPORTS:
                k = f"kv/{t}/{conns}x{pipe}"
                cases.append((k, t, lambda lib, t=t, c=conns, p=pipe: runner.run_kv(t, c, p, lib=lib),
                              {f"{k}/rps": "rps", f"{k}/cpu_us": "cpu_us_per_req"}))
        if PERF_STATUS["ok"]:
            c, p = KV_SYSCALL_LEVEL
            for t in ("shm", "tcp"):
                k = f"kvsys/{t}/{c}x{p}"
                cases.append((k, t, lambda lib, t=t, c=c, p=p: runner.run_kv(t, c, p, lib=lib, perf=True),
                              {k: "syscalls_per_req"}))

    # Correctness first (not timed): the emulated stream with every byte checked.
    for lib in ([args.compare] if args.compare else []) + [None]:
        for size in STREAM_SIZES:
            r = runner.run("shm", "stream", size, secs=0.2, extra=("--verify",), lib=lib)
            print(f"check: emulated stream of {size} B writes, every byte verified: "
                  + ("ok" if r else "FAILED")
                  + ("" if not args.compare else f" ({args.compare_name if lib else args.name})"), flush=True)

    values = {f: [] for c in cases for f in c[3]}
    raw = {c[0]: [] for c in cases}
    # --compare: the other library's values of the emulated cases, same keys.
    cmp_values = {f: [] for c in cases if c[1] in EMULATED for f in c[3]}
    cmp_raw = {c[0]: [] for c in cases if c[1] in EMULATED}

    def record(key, figs, r, vals, raws):
        raws[key].append(r)
        for f, field in figs.items():
            vals[f].append(None if r is None else r[field])

    start = time.monotonic()
    kv_time = 0.0
    for run in range(1, args.runs + 1):
        for key, t, go, figs in cases:
            t0 = time.monotonic()
            if args.compare and t in EMULATED:
                # Back to back, the first alternating by run (A B, B A, ...).
                for lib in ((args.compare, None) if run % 2 else (None, args.compare)):
                    record(key, figs, go(lib), cmp_values if lib else values, cmp_raw if lib else raw)
            else:
                record(key, figs, go(None), values, raw)
            if key.startswith("kv"):
                kv_time += time.monotonic() - t0
        print(f"socket run {run}/{args.runs} done ({time.monotonic() - start:.0f} s"
              + (f", kvbench {kv_time:.0f} s of it" if kv_time else "") + ")", flush=True)
    if args.compare:
        return values, raw, cmp_values, cmp_raw
    return values, raw


def measure_idle(args, runner):
    """kvbench --idle: once per invocation (not per run), every transport;
    --compare: the other library's emulated run too (key "cmp")."""
    out = {}
    order = [("cmp", "shm", args.compare)] if args.compare else []
    for key, t, lib in order + [(t, t, None) for t in KV_TRANSPORTS]:
        r = runner.run_kv(t, idle=args.idle_conns, lib=lib)
        out[key] = r
        what = ("-" if r is None else
                f"{r['opened']} opened" + (f", failed: {r['error']}" if "error" in r else ""))
        print(f"idle {args.idle_conns} connections, {KV_LABELS[t]}"
              + (f" ({args.compare_name})" if key == "cmp" else "") + f": {what}", flush=True)
    return out


def measure_nginx(args, out):
    path = os.path.join(out, "nginx.jsonl")
    cmd = [os.path.join(ROOT, "scripts/bench-nginx.sh"), "--runs", str(args.runs),
           "--secs", str(args.nginx_secs), "--json", path,
           *(["--compare", args.compare] if args.compare else []), args.lib]
    print("$ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, text=True, capture_output=True)
    with open(os.path.join(out, "nginx.md"), "w") as f:
        f.write(p.stdout)
        if p.stderr.strip():  # e.g. which kind of socket errors wrk saw
            f.write("\n" + p.stderr)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        return None, f"scripts/bench-nginx.sh failed (exit {p.returncode}): {p.stderr.strip()}"
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return rows, None


def build_results(args, values, raw, nginx_rows, nginx_error, runner, elapsed, idle=None):
    m = {k: med(v) for k, v in values.items()}
    r = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "library": args.lib,
        "commit": git_head(),
        "note": args.note,
        "defer": not args.no_defer,
        "runs": args.runs,
        "secs_per_run": args.secs,
        "spin_us": args.spin_us if args.spin_us is not None else "default (50)",
        "emulated": {"address": EMU_ADDR, "SHMNET_PARTITIONS": EMU_PARTITIONS,
                     "SHMNET_FALLBACK": "never"},
        "units": {"rtt": "us per round trip", "stream": "GB/s (1e9 bytes/s)",
                  "connrate": "connections/s", "nginx": "requests/s"},
        "medians": m,
        "runs_values": values,
        "raw": raw,
        "failures": runner.failures,
        "seconds": round(elapsed, 1),
    }
    r["emulated_writes_per_s"] = writes_per_s(m)
    if nginx_rows is not None:
        r["nginx"] = nginx_summary(nginx_rows, "shm")
    else:
        r["nginx"] = {"error": nginx_error}
    r["targets"] = targets(m, r)
    if not args.no_kv:
        r["kv"] = {"levels": [f"{c}x{p}" for c, p in KV_LEVELS], "secs_per_run": args.kv_secs,
                   "units": {"rps": "requests/s (timed part)",
                             "cpu_us": "CPU us per request, client + server (getrusage over the timed part)",
                             "syscalls": "system calls of both processes per request over the timed part "
                                         "(perf stat raw_syscalls:sys_enter, window opened and closed by kvbench)"},
                   "perf": PERF_STATUS, "idle": idle or {}, "idle_conns": args.idle_conns}
        r["kv_targets"] = kv_targets(m, r)
    return r


def writes_per_s(m):
    writes = {}
    for size in STREAM_SIZES:
        g = m.get(f"stream/shm/{size}")
        writes[str(size)] = None if g is None else g * 1e9 / size
    return writes


def nginx_summary(nginx_rows, emulated):
    """{"shm/1k": ..., "tcp/1k": ...}; "shm" from the rows of transport `emulated`."""
    ng = {}
    for t in (emulated, "tcp", "unix"):
        for f in ("1k", "1m"):
            rs = [x for x in nginx_rows if x["transport"] == t and x["file"] == f]
            if not rs and t == "unix":
                continue  # no socket_wrapper on this machine
            ng[f"{'shm' if t == emulated else t}/{f}"] = {
                "median": med([x["req_per_s"] for x in rs]),
                "runs": [x["req_per_s"] for x in rs],
                # CPU per request of nginx's workers and wrk (user + system, us).
                "cpu_us": med([x["cpu_us_per_req"] for x in rs if "cpu_us_per_req" in x]),
                "socket_errors": sum(x["socket_errors"] for x in rs),
                "non_2xx": sum(x["non_2xx"] for x in rs)}
    return ng


# ---------------------------------------------------------------- --compare

def file_id(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"path": path, "sha256": h.hexdigest(), "bytes": os.path.getsize(path),
            "modified": datetime.datetime.fromtimestamp(os.path.getmtime(path)).astimezone()
            .isoformat(timespec="seconds")}


def compare_figures():
    """(key, label, unit, lower_is_better) of every emulated figure."""
    out = [(f"rtt/shm/{z}", f"RTT {size_label(z)}, spinning", "us", True) for z in RTT_SIZES]
    out += [(f"rtt/shm0/{z}", f"RTT {size_label(z)}, SHMNET_SPIN_US=0", "us", True) for z in RTT_SIZES]
    out += [(f"stream/shm/{z}", f"stream, {size_label(z)} writes", "GB/s", False) for z in STREAM_SIZES]
    out.append(("connrate/shm", "connections", "/s", False))
    out += [(f"nginx/{f}", f"nginx {name} file", "req/s", False) for f, name in (("1k", "1 KiB"), ("1m", "1 MiB"))]
    for c, p in KV_LEVELS:
        out.append((f"kv/shm/{c}x{p}/rps", f"kv {kv_level_label((c, p))}", "req/s", False))
        out.append((f"kv/shm/{c}x{p}/cpu_us", f"kv {kv_level_label((c, p))}, CPU per request", "us", True))
    c, p = KV_SYSCALL_LEVEL
    out.append((f"kvsys/shm/{c}x{p}", f"kv {kv_level_label((c, p))}, system calls per request", "calls", True))
    return out


def compare_results(args, r, cmp_values, cmp_raw, nginx_rows):
    """The "compare" section: A = --compare (args.compare_name), B = --lib (args.name)."""
    # The other library's results, as build_results would give them: its
    # emulated runs with this invocation's baselines.
    values = dict(r["runs_values"])
    values.update(cmp_values)
    m = {k: med(v) for k, v in values.items()}
    o = {"runs_values": values, "emulated_writes_per_s": writes_per_s(m)}
    o["nginx"] = nginx_summary(nginx_rows, "cmp") if nginx_rows is not None else dict(r["nginx"])
    o["targets"] = targets(m, o)
    if "kv_targets" in r:
        o["kv_targets"] = kv_targets(m, o)
    rows = []
    for key, label, unit, lower in compare_figures():
        if key.startswith("nginx/"):
            f = key.split("/")[1]
            try:
                a, b = o["nginx"][f"shm/{f}"]["runs"], r["nginx"][f"shm/{f}"]["runs"]
            except (KeyError, TypeError):
                continue
        elif key not in cmp_values:
            continue  # not measured in this invocation (--no-kv, no perf)
        else:
            a, b = cmp_values.get(key, []), r["runs_values"].get(key, [])
        pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
        av, bv = [x for x in a if x is not None], [y for y in b if y is not None]
        rows.append({"key": key, "figure": label, "unit": unit, "lower_is_better": lower,
                     "a_runs": a, "b_runs": b,
                     "a_median": med(a), "a_min": min(av, default=None), "a_max": max(av, default=None),
                     "b_median": med(b), "b_min": min(bv, default=None), "b_max": max(bv, default=None),
                     "ratio": ratio(med(b), med(a)),
                     "pair_ratios": [y / x for x, y in pairs if x],
                     "b_better_runs": sum(1 for x, y in pairs if (y < x if lower else y > x)),
                     "pairs": len(pairs)})
    return {"a": {"name": args.compare_name, **file_id(args.compare)},
            "b": {"name": args.name, **file_id(args.lib)},
            "order": "each emulated figure measured for both libraries back to back in every run; "
                     "a first in odd runs, b first in even runs; baselines once per run",
            "ratio": "b / a",
            "table": rows,
            "a_medians": {k: med(v) for k, v in cmp_values.items()},
            "a_runs_values": cmp_values, "a_raw": cmp_raw,
            "a_nginx": o["nginx"], "a_targets": o["targets"], "a_kv_targets": o.get("kv_targets")}


def compare_report(r):
    c = r["compare"]
    a, b = c["a"]["name"], c["b"]["name"]
    L = [f"## Same run, interleaved: {a} vs {b} ({r['runs']} runs)", ""]
    for side in ("a", "b"):
        x = c[side]
        L.append(f"- {x['name']}: {x['path']} (sha256 {x['sha256'][:12]}, {x['bytes']:,} bytes, "
                 f"built {x['modified']})")
    if c["a"]["sha256"] == c["b"]["sha256"]:
        L.append("- the two files are identical: every difference below is noise")
    L.append("")
    L.append("Every emulated figure was measured for both libraries back to back in each run "
             f"({a} first in odd runs, {b} first in even runs); the baselines above once per run. "
             f"Median (min - max over the runs); ratio = {b} / {a} of the medians; per run = the "
             f"ratios of the back-to-back pairs, min - max; better = runs in which {b} was better "
             "(lower RTT, higher rate). A per-run range that straddles 1.00x is noise at this many runs.")
    L.append("")
    L.append(f"| figure | unit | {a} | {b} | {b} / {a} | per run | {b} better |")
    L.append("|---|---|---:|---:|---:|---:|---:|")

    def mm(x, lo, hi):
        if x is None:
            return "FAILED"
        return fmt(x) if lo == hi else f"{fmt(x)} ({fmt(lo)} - {fmt(hi)})"

    steady = []
    for row in c["table"]:
        pr = row["pair_ratios"]
        per = "-" if not pr else (f"{min(pr):.2f}x" if len(pr) == 1 else f"{min(pr):.2f}x - {max(pr):.2f}x")
        unit = row["unit"] + (", lower is better" if row["lower_is_better"] else "")
        L.append(f"| {row['figure']} | {unit} | {mm(row['a_median'], row['a_min'], row['a_max'])} | "
                 f"{mm(row['b_median'], row['b_min'], row['b_max'])} | {fx(row['ratio'])} | {per} | "
                 f"{row['b_better_runs']}/{row['pairs']} |")
        if len(pr) >= 3 and row["b_better_runs"] in (0, row["pairs"]):
            steady.append(f"{row['figure']} ({'better' if row['b_better_runs'] else 'worse'}, {fx(row['ratio'])})")
    L.append("")
    chance = f"with {r['runs']} runs, noise alone does this to about 1 figure in {2 ** (r['runs'] - 1)}"
    if r["runs"] < 3:
        L.append("(Fewer than 3 runs: too few to tell a change from noise.)")
    elif steady:
        L.append(f"Same direction in every run ({chance}; a real change also shows as a per-run range "
                 "clear of 1.00x that holds up in a second invocation): " + "; ".join(steady) + ".")
    else:
        L.append(f"No figure has {b} better, or worse, in every run ({chance}).")
    L.append("")
    L.append(f"Issue 6 targets for both (each against this invocation's baselines):")
    L.append("")
    L.append(f"| target | {a} | {b} |")
    L.append("|---|---|---|")
    for ta, tb in zip(c["a_targets"], r["targets"]):
        def v(t):
            return t["figure"] + ("" if t["met"] is None else (" (met)" if t["met"] else " (MISSED)"))
        L.append(f"| {ta['target']} | {v(ta)} | {v(tb)} |")
    if c.get("a_kv_targets"):
        L.append("")
        L.append("Issue 14 targets for both:")
        L.append("")
        L.append(f"| target | {a} | {b} |")
        L.append("|---|---|---|")
        for ta, tb in zip(c["a_kv_targets"], r["kv_targets"]):
            L.append(f"| {ta['target']} | {v(ta)} | {v(tb)} |")
    return L


def paired(r, a, b):
    """Per-run ratios a/b (both measured within the same interleaved run)."""
    va, vb = r["runs_values"].get(a, []), r["runs_values"].get(b, [])
    return [x / y for x, y in zip(va, vb) if x is not None and y]


def spread(ratios):
    return f" (per run {min(ratios):.2f}x - {max(ratios):.2f}x)" if len(ratios) > 1 else ""


def targets(m, r):
    floor, floor0 = m.get("rtt/floor/64"), m.get("rtt/floor/0")
    spin, spin0 = m.get("rtt/shm/64"), m.get("rtt/shm0/64")
    unix, tcp = m.get("rtt/unix/64"), m.get("rtt/tcp/64")
    s64k = ratio(m.get("stream/shm/65536"), m.get("stream/tcp/65536"))
    w64 = r["emulated_writes_per_s"].get("64")
    conn = ratio(m.get("connrate/shm"), m.get("connrate/tcp"))
    ng = r.get("nginx", {})

    def ngr(f):
        try:
            return ratio(ng[f"shm/{f}"]["median"], ng[f"tcp/{f}"]["median"])
        except (KeyError, TypeError):
            return None

    def t(name, value, ok, shown):
        return {"target": name, "value": value, "met": None if value is None else bool(ok),
                "figure": shown}

    v1, v1b = ratio(spin, floor), ratio(tcp, spin)
    def ngp(f):
        try:
            return [x / y for x, y in zip(ng[f"shm/{f}"]["runs"], ng[f"tcp/{f}"]["runs"]) if y]
        except (KeyError, TypeError):
            return []

    w64s = [g * 1e9 / 64 for g in r["runs_values"].get("stream/shm/64", []) if g is not None]
    out = [
        t("64 B RTT, spinning <= 2x raw floor", v1, v1 is not None and v1 <= 2,
          f"{fx(v1)} the 64 B-message floor{spread(paired(r, 'rtt/shm/64', 'rtt/floor/64'))}; "
          f"{fx(ratio(spin, floor0))} the flag-only floor"),
        t("64 B RTT, spinning >= 50x better than TCP", v1b, v1b is not None and v1b >= 50,
          f"TCP / emulated = {fx(v1b)}{spread(paired(r, 'rtt/tcp/64', 'rtt/shm/64'))}"),
        t("64 B RTT, SHMNET_SPIN_US=0 <= Unix", ratio(spin0, unix),
          spin0 is not None and unix is not None and spin0 <= unix,
          f"{fmt(spin0)} us vs {fmt(unix)} us = {fx(ratio(spin0, unix))}"
          f"{spread(paired(r, 'rtt/shm0/64', 'rtt/unix/64'))}"),
        t("64 KiB streaming >= 5x TCP", s64k, s64k is not None and s64k >= 5,
          fx(s64k) + spread(paired(r, "stream/shm/65536", "stream/tcp/65536"))),
        t("64 B writes >= 20 M/s", w64, w64 is not None and w64 >= 20e6,
          "-" if w64 is None else f"{w64 / 1e6:.1f} M/s"
          + (f" (per run {min(w64s) / 1e6:.1f} - {max(w64s) / 1e6:.1f} M/s)" if len(w64s) > 1 else "")),
        t("connections/s >= TCP", conn, conn is not None and conn >= 1,
          fx(conn) + spread(paired(r, "connrate/shm", "connrate/tcp"))),
        t("nginx 1 KiB >= 1.3x TCP", ngr("1k"), (ngr("1k") or 0) >= 1.3, fx(ngr("1k")) + spread(ngp("1k"))),
        t("nginx 1 MiB >= 2x TCP", ngr("1m"), (ngr("1m") or 0) >= 2, fx(ngr("1m")) + spread(ngp("1m"))),
    ]
    return out


def kv_level_label(level):
    c, p = level
    return f"{c} conn{'s' if c > 1 else ''}" + ("" if p == 1 else f", {p} outstanding")


def kv_targets(m, r):
    """Issue 14: kvbench throughput >= 1.5x TCP and >= 1.3x Unix at 50, 200 and
    1000 connections (one request outstanding each); CPU per request <= TCP
    at every level."""
    out = []

    def t(name, value, ok, shown):
        return {"target": name, "value": value, "met": None if value is None else bool(ok), "figure": shown}

    for base, need in (("tcp", 1.5), ("unix", 1.3)):
        for c in KV_TARGET_LEVELS:
            a, b = f"kv/shm/{c}x1/rps", f"kv/{base}/{c}x1/rps"
            v = ratio(m.get(a), m.get(b))
            out.append(t(f"kv {c} connections: requests/s >= {need}x {'TCP' if base == 'tcp' else 'Unix'}",
                         v, v is not None and v >= need, fx(v) + spread(paired(r, a, b))))
    ng = r.get("nginx", {})
    try:
        v = ratio(ng["shm/1k"]["median"], ng["unix/1k"]["median"])
        runs = [x / y for x, y in zip(ng["shm/1k"]["runs"], ng["unix/1k"]["runs"]) if y]
    except (KeyError, TypeError):
        v, runs = None, []
    out.append(t("nginx 1 KiB: requests/s >= 1.3x Unix sockets (socket_wrapper)", v,
                 v is not None and v >= 1.3, fx(v) + spread(runs)))
    for c, p in KV_LEVELS:
        a, b = f"kv/shm/{c}x{p}/cpu_us", f"kv/tcp/{c}x{p}/cpu_us"
        v = ratio(m.get(a), m.get(b))
        out.append(t(f"kv {kv_level_label((c, p))}: CPU per request <= TCP", v, v is not None and v <= 1,
                     f"{fmt(m.get(a))} vs {fmt(m.get(b))} us = {fx(v)}{spread(paired(r, a, b))}"))
    return out


def kv_report(r):
    """The issue 14 sections: kvbench load, system calls, idle connections, targets."""
    m, kv = r["medians"], r["kv"]
    L = ["## Key-value server (kvbench; requests/s and CPU per request)", ""]
    L.append("One-thread epoll server (hash table) and one-thread epoll load client, 32-byte GET/SET "
             "requests and replies (1 in 4 a SET), every reply checked; CPU = client + server, user + "
             f"system (getrusage) over the timed part ({kv['secs_per_run']} s after 0.2 s of warm-up). "
             "Emulated: preloaded, on " + EMU_ADDR + ".")
    L.append("")
    L.append("| connections | emulated req/s | Unix req/s | TCP req/s | emulated / TCP | emulated / Unix "
             "| CPU us/req emulated | Unix | TCP | CPU emulated / TCP |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c, p in KV_LEVELS:
        k = f"{c}x{p}"
        e, u, t = (m.get(f"kv/{x}/{k}/rps") for x in KV_TRANSPORTS)
        ce, cu, ct = (m.get(f"kv/{x}/{k}/cpu_us") for x in KV_TRANSPORTS)
        L.append(f"| {kv_level_label((c, p))} | {fmt(e)} | {fmt(u)} | {fmt(t)} | {fx(ratio(e, t))} | "
                 f"{fx(ratio(e, u))} | {fmt(ce)} | {fmt(cu)} | {fmt(ct)} | {fx(ratio(ce, ct))} |")
    L.append("")
    c, p = KV_SYSCALL_LEVEL
    L.append(f"### System calls per request ({kv_level_label((c, p))}, one request outstanding each)")
    L.append("")
    if not kv["perf"]["ok"]:
        L.append(f"Not measured: {kv['perf']['note']}.")
    else:
        L.append("The same kvbench case run once more per run under `perf stat -e raw_syscalls:sys_enter` "
                 "(both processes; kvbench opens perf's window when its timed part starts and closes it "
                 "when it ends, so the count is divided by the requests answered in that window).")
        L.append("")
        L.append("| transport | system calls / request | req/s (under perf) |")
        L.append("|---|---:|---:|")
        for t in ("shm", "tcp"):
            k = f"kvsys/{t}/{c}x{p}"
            rps = med([x["rps"] for x in r["raw"].get(k, []) if x])
            L.append(f"| {KV_LABELS[t]} | {fmt(m.get(k))} | {fmt(rps)} |")
    L.append("")
    idle = kv.get("idle") or {}
    if idle:
        L.append(f"### {kv['idle_conns']:,} idle connections (kvbench --idle, once per invocation)")
        L.append("")
        L.append("Per connection: (after opening - before) / connections opened, client / server. RSS "
                 "includes the shared-memory pages; slab is the kernel's (system-wide) where kernel sockets "
                 "keep their state. Idle CPU: both processes in epoll_wait on all connections for 1 s. "
                 "Checked: connections that then answered one request correctly.")
        L.append("")
        L.append("| transport | opened | open time (s) | RSS KiB/conn | shm KiB/conn | fds/conn | slab KiB/conn "
                 "| idle CPU ms | checked | failure |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        names = {"cmp": f"emulated ({r['compare']['a']['name']})" if "compare" in r else "emulated (other)"}
        for key in [k for k in ("shm", "cmp", "unix", "tcp") if k in idle]:
            x = idle[key]
            label = names.get(key, KV_LABELS.get(key, key))
            if key == "shm" and "cmp" in idle and "compare" in r:
                label = f"emulated ({r['compare']['b']['name']})"
            if x is None:
                L.append(f"| {label} | FAILED | | | | | | | | see FAILED runs |")
                continue

            def pair(f, d=1):
                return f"{x['client_' + f]:.{d}f} / {x['server_' + f]:.{d}f}"
            err = x.get("error")
            L.append(f"| {label} | {x['opened']:,} of {x['conns']:,} | {x['open_secs']:.2f} | "
                     f"{pair('rss_kib_per_conn')} | {pair('shm_kib_per_conn')} | {pair('fds_per_conn', 2)} | "
                     f"{x['slab_kib_per_conn']:.1f} | {x['hold_client_cpu_s'] * 1e3:.1f} / "
                     f"{x['hold_server_cpu_s'] * 1e3:.1f} | {x['checked']:,} | "
                     + (f"at {x['failed_at']:,}: {err}" if err else "none") + " |")
        L.append("")
    L.append("## Issue 14 targets")
    L.append("")
    L.append("| target | this run | |")
    L.append("|---|---|---|")
    for t in r["kv_targets"]:
        status = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        L.append(f"| {t['target']} | {t['figure']} | {status} |")
    return L


def report(r, spin_label):
    m = r["medians"]
    L = []
    L.append(f"# libshmnet benchmarks ({r['date']}, {r['runs']} runs per figure, medians)")
    L.append("")
    L.append(f"Machine: {r['machine']}. Shared, noisy VM: compare ratios within one run.")
    L.append(f"Load average (1, 5, 15 min) before: {r['loadavg_before']}, after: {r['loadavg_after']} "
             "(after includes the benchmark's own load).")
    L.append(f"Library: {r['library']} (work tree {r['commit'] or 'unknown: not a git checkout'}){'; ' + r['note'] if r['note'] else ''}.")
    if "compare" in r:
        L.append(f"Compared with {r['compare']['a']['path']} in the same runs (last section); the tables "
                 f"before it are {r['compare']['b']['name']}'s.")
    L.append(f"Emulated = sockbench preloaded with libshmnet.so on {EMU_ADDR} "
             f"(SHMNET_FALLBACK=never, private SHMNET_DIR"
             f"{'' if r.get('defer', True) else ', SHMNET_DEFER=0'}); Unix/TCP = same program, plain.")
    L.append("")
    L.append("## Ping-pong round trip (us)")
    L.append("")
    L.append("| transport | " + " | ".join(size_label(z) for z in RTT_SIZES)
             + " | 64 B vs floor | 64 B: TCP / this | 4 KiB: TCP / this |")
    L.append("|---|" + "---:|" * (len(RTT_SIZES) + 3))
    for t in ("floor", "shm", "shm0", "unix", "tcp"):
        a, b = m.get(f"rtt/{t}/64"), m.get(f"rtt/{t}/4096")
        L.append(f"| {TRANSPORTS[t].format(spin=spin_label)} | "
                 + " | ".join(fmt(m.get(f"rtt/{t}/{z}")) for z in RTT_SIZES) + " | "
                 f"{fx(ratio(a, m.get('rtt/floor/64')))} | {fx(ratio(m.get('rtt/tcp/64'), a))} | "
                 f"{fx(ratio(m.get('rtt/tcp/4096'), b))} |")
    L.append("")
    L.append(f"(floor: two processes, a shared buffer and a flag word per direction, "
             f"each message copied in and out; flag only, no payload: {fmt(m.get('rtt/floor/0'), 3)} us)")
    L.append("")
    L.append(f"## Streaming, one connection (GB/s; emulated: spin {spin_label})")
    L.append("")
    L.append("| write size | emulated | Unix | TCP | emulated writes/s | emulated / TCP | emulated / Unix |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|")
    for size in STREAM_SIZES:
        e, u, t = (m.get(f"stream/{x}/{size}") for x in ("shm", "unix", "tcp"))
        w = r["emulated_writes_per_s"][str(size)]
        L.append(f"| {size_label(size)} | {fmt(e)} | {fmt(u)} | {fmt(t)} | "
                 f"{'-' if w is None else f'{w / 1e6:.2f} M'} | {fx(ratio(e, t))} | {fx(ratio(e, u))} |")
    L.append("")
    L.append("## Connections (connect, 1-byte request, 1-byte reply, close)")
    L.append("")
    L.append("| transport | connections/s | vs TCP |")
    L.append("|---|---:|---:|")
    for t in ("shm", "unix", "tcp"):
        c = m.get(f"connrate/{t}")
        label = "emulated" if t == "shm" else TRANSPORTS[t]
        L.append(f"| {label} | {fmt(c)} | {fx(ratio(c, m.get('connrate/tcp')))} |")
    L.append("")
    ng = r["nginx"]
    if "error" in ng:
        if ng["error"]:
            L.append(f"## nginx + wrk: FAILED ({ng['error']})")
            L.append("")
    else:
        L.append("## nginx (2 workers, sendfile) + wrk -t2 -c50 (requests/s)")
        L.append("")
        L.append("| file | emulated (preloaded) | kernel TCP | ratio | wrk socket errors (emulated / TCP, all runs) |")
        L.append("|---|---:|---:|---:|---:|")
        for f, name in (("1k", "1 KiB"), ("1m", "1 MiB")):
            s, t = ng[f"shm/{f}"], ng[f"tcp/{f}"]
            L.append(f"| {name} | {fmt(s['median'])} | {fmt(t['median'])} | "
                     f"{fx(ratio(s['median'], t['median']))} | {s['socket_errors']} / {t['socket_errors']} |")
        L.append("")
        if "unix/1k" in ng:
            L.append("Against TCP emulated over Unix sockets (Samba's socket_wrapper, both preloaded "
                     "with it; Debian's libsocket-wrapper):")
            L.append("")
            L.append("| file | emulated (preloaded) | Unix sockets (socket_wrapper) | ratio |")
            L.append("|---|---:|---:|---:|")
            for f, name in (("1k", "1 KiB"), ("1m", "1 MiB")):
                s, u = ng[f"shm/{f}"], ng[f"unix/{f}"]
                L.append(f"| {name} | {fmt(s['median'])} | {fmt(u['median'])} | "
                         f"{fx(ratio(s['median'], u['median']))} |")
            L.append("")
    L.append("## Issue 6 targets")
    L.append("")
    L.append("Met/missed is judged on the medians; the per-run ratios (both sides measured in the")
    L.append("same interleaved run) show how stable the verdict is on this machine.")
    L.append("")
    L.append("| target | this run | |")
    L.append("|---|---|---|")
    for t in r["targets"]:
        status = "n/a" if t["met"] is None else ("met" if t["met"] else "MISSED")
        L.append(f"| {t['target']} | {t['figure']} | {status} |")
    if "kv" in r:
        L.append("")
        L += kv_report(r)
    if "compare" in r:
        L.append("")
        L += compare_report(r)
    if r["failures"]:
        L.append("")
        L.append(f"## FAILED runs ({len(r['failures'])})")
        L.append("")
        for f in r["failures"]:
            L.append(f"- `{f['command']}`: {f['error']}")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------- chart (SVG)

def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def log_ticks(lo, hi):
    import math
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    return [10.0 ** e for e in range(a, b + 1)]


def tick_label(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def size_label(s):
    return f"{s // 1024} KiB" if s >= 1024 else f"{s} B"


def line_panel(x0, y0, w, h, title, ylabel, xs, series):
    """series: [(label, color, [y or None per x])]; log-log axes."""
    import math
    ys = [y for _, _, v in series for y in v if y]
    out = [f'<text x="{x0 + w / 2}" y="{y0 - 10}" text-anchor="middle" font-weight="bold">{esc(title)}</text>']
    if not ys:
        return out + [f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" text-anchor="middle">no data</text>']
    ticks = log_ticks(min(ys), max(ys))
    lo, hi = math.log10(ticks[0]), math.log10(ticks[-1])
    if hi == lo:
        hi = lo + 1
    lx = [math.log2(x) for x in xs]
    pad = 0.4

    def px(i):
        return x0 + (lx[i] - lx[0] + pad) / (lx[-1] - lx[0] + 2 * pad) * w

    def py(y):
        return y0 + h - (math.log10(y) - lo) / (hi - lo) * h

    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>')
    for t in ticks:
        yy = py(t)
        out.append(f'<line x1="{x0}" y1="{yy:.1f}" x2="{x0 + w}" y2="{yy:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 6}" y="{yy + 4:.1f}" text-anchor="end" font-size="11">{tick_label(t)}</text>')
    for i, x in enumerate(xs):
        out.append(f'<text x="{px(i):.1f}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">{size_label(x)}</text>')
    out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle" font-size="11">message / write size</text>')
    out.append(f'<text transform="translate({x0 - 46},{y0 + h / 2}) rotate(-90)" text-anchor="middle" font-size="11">{esc(ylabel)}</text>')
    for k, (label, color, v) in enumerate(series):
        pts = [(px(i), py(y)) for i, y in enumerate(v) if y]
        if len(pts) > 1:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                       + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        for a, b in pts:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{color}"/>')
        ly = y0 + 14 + 15 * k
        out.append(f'<line x1="{x0 + w + 12}" y1="{ly - 4}" x2="{x0 + w + 30}" y2="{ly - 4}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{x0 + w + 34}" y="{ly}" font-size="11">{esc(label)}</text>')
    return out


def bar_panel(x0, y0, w, h, title, groups, series, per_group=False):
    """groups: [name]; series: [(label, color, [value per group])]; linear axis from 0
    (per_group: each group scaled to its own maximum; the bars carry their values)."""
    vals = [y for _, _, v in series for y in v if y]
    out = [f'<text x="{x0 + w / 2}" y="{y0 - 10}" text-anchor="middle" font-weight="bold">{esc(title)}</text>']
    if not vals:
        return out + [f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" text-anchor="middle">no data</text>']
    top = max(vals) * 1.15
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>')
    gw = w / len(groups)
    bw = gw * 0.7 / len(series)
    for g, name in enumerate(groups):
        out.append(f'<text x="{x0 + gw * (g + 0.5):.1f}" y="{y0 + h + 16}" text-anchor="middle" font-size="11">{esc(name)}</text>')
        for k, (label, color, v) in enumerate(series):
            y = v[g]
            if not y:
                continue
            bx = x0 + gw * g + gw * 0.15 + bw * k
            gtop = max((v2[g] or 0) for _, _, v2 in series) * 1.15 if per_group else top
            bh = y / gtop * h
            out.append(f'<rect x="{bx:.1f}" y="{y0 + h - bh:.1f}" width="{bw - 2:.1f}" height="{bh:.1f}" fill="{color}"/>')
            out.append(f'<text x="{bx + bw / 2 - 1:.1f}" y="{y0 + h - bh - 3:.1f}" text-anchor="middle" font-size="10">{tick_label(round(y, -2) if y >= 1000 else round(y))}</text>')
    for k, (label, color, _) in enumerate(series):
        ly = y0 + 14 + 15 * k
        out.append(f'<rect x="{x0 + w + 12}" y="{ly - 9}" width="12" height="10" fill="{color}"/>')
        out.append(f'<text x="{x0 + w + 28}" y="{ly}" font-size="11">{esc(label)}</text>')
    return out


def chart(r, spin_label):
    m = r["medians"]
    W, H = 1100, 760
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="13">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16" font-weight="bold">'
         f'libshmnet: emulated TCP (LD_PRELOAD) vs Unix sockets vs TCP loopback</text>',
         f'<text x="{W / 2}" y="42" text-anchor="middle" font-size="11" fill="#555">'
         f'{esc(r["date"])}, medians of {r["runs"]} runs, {esc(r["machine"])} (shared, noisy VM)</text>']
    rtt_series = [(TRANSPORTS[t].format(spin=spin_label), COLORS[t],
                   [m.get(f"rtt/{t}/{z}") for z in RTT_SIZES])
                  for t in ("floor", "shm", "shm0", "unix", "tcp")]
    s += line_panel(90, 90, 260, 250, "Ping-pong round trip (lower is better)", "us per round trip",
                    RTT_SIZES, rtt_series)
    st_series = [(("emulated" if t == "shm" else TRANSPORTS[t]), COLORS[t],
                  [m.get(f"stream/{t}/{z}") for z in STREAM_SIZES]) for t in ("shm", "unix", "tcp")]
    s += line_panel(640, 90, 300, 250, "Streaming throughput (higher is better)", "GB/s",
                    STREAM_SIZES, st_series)
    conn = [(("emulated" if t == "shm" else TRANSPORTS[t]), COLORS[t], [m.get(f"connrate/{t}")])
            for t in ("shm", "unix", "tcp")]
    s += bar_panel(90, 450, 260, 250, "Connections per second", ["connect+request+close"], conn)
    ng = r["nginx"]
    if "error" not in ng:
        ngs = [("emulated (preloaded)", COLORS["shm"], [ng["shm/1k"]["median"], ng["shm/1m"]["median"]]),
               ("kernel TCP", COLORS["tcp"], [ng["tcp/1k"]["median"], ng["tcp/1m"]["median"]])]
        s += bar_panel(640, 450, 300, 250, "nginx + wrk requests/s (each file to its own scale)",
                       ["1 KiB file", "1 MiB file"], ngs, per_group=True)
    s.append("</svg>")
    return "\n".join(s) + "\n"


# ---------------------------------------------------------------- context

def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1048576:.0f} GiB"
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU {cpu}, {mem}, Linux {platform.release()}"


def loadavg():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except (OSError, ValueError):
        return [0.0, 0.0, 0.0]


def git_head():
    try:
        # Read-only; "-dirty" when the work tree has uncommitted changes.
        return subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    spin_label = default_spin() if args.spin_us is None else f"{args.spin_us} us"
    load_before = loadavg()
    if load_before[0] > 0.7:
        print(f"bench: warning: load average {load_before[0]:.2f} before starting: something else "
              "is running, and with 2 vCPUs the figures will be unreliable", flush=True)
    start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="shmnet-sockbench.", dir="/tmp")
    try:
        runner = Runner(args, tmp)
        if not args.no_kv:
            probe_perf()
            if not PERF_STATUS["ok"]:
                print(f"bench: {PERF_STATUS['note']}", flush=True)
        if args.compare:
            values, raw, cmp_values, cmp_raw = measure_sockets(args, runner)
        else:
            values, raw = measure_sockets(args, runner)
        idle = measure_idle(args, runner) if not args.no_kv and args.idle_conns else None
        nginx_rows, nginx_error = (None, "") if args.no_nginx else measure_nginx(args, args.out)
        udp = None if args.no_udp else bench_udp.run(args.lib, args.out, min(args.runs, 3))
        if nginx_error:
            runner.failures.append({"command": "scripts/bench-nginx.sh", "error": nginx_error})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r = build_results(args, values, raw, nginx_rows, nginx_error, runner, time.monotonic() - start, idle)
    if args.compare:
        r["compare"] = compare_results(args, r, cmp_values, cmp_raw, nginx_rows)
    r["loadavg_before"], r["loadavg_after"] = load_before, loadavg()
    r["udp"] = udp
    text = report(r, spin_label) + "\n" + bench_udp.report(udp)
    print()
    print(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(r, f, indent=1)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "chart.svg"), "w") as f:
        f.write(chart(r, spin_label))
    print(f"wrote {args.out}/results.json, bench.md, chart.svg ({r['seconds']:.0f} s)")
    if runner.failures:
        fail(f"{len(runner.failures)} run(s) failed; see above")


if __name__ == "__main__":
    main()
