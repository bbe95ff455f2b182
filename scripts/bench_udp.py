#!/usr/bin/python3
"""Usage: scripts/bench_udp.py [--lib PATH] [--out DIR] [--runs N] [--secs S]
                              [--iomux epoll|poll|select]

UDP rows of `make bench` (issue 16; scripts/bench.py calls `run` unless
--no-udp): sockperf, the tool kernel-bypass stacks publish their UDP
latency with, as client and server:

- ping-pong of 64-byte datagrams (`sockperf pp`, blocking recvfrom):
  round trip = twice sockperf's one-way latency, mean and median;
- one-way datagram rate at 64 and 1472 bytes (`sockperf tp` against
  `sockperf sr`): datagrams the *server* received per second (UDP drops
  what the receiver cannot take; the client's send rate is printed too).

Each for the emulated network (both preloaded, 127.77.91.1,
SHMNET_FALLBACK=never, a private SHMNET_DIR), the default mode (both
preloaded, 127.0.0.1, SHMNET_UDP=1: decision 46) and kernel UDP on
127.0.0.1 (plain), and a Unix datagram socketpair (tests/bench/dgrambench.c, built
into DIR; its sends wait for room, so its rate is what the receiver
took). Runs interleaved, medians reported. With --iomux, sockperf
waits in that call (a one-line feed file, `-f FILE -F IOMUX`: with one
address and no feed file sockperf receives with a blocking recvfrom). Skipped with a line when
sockperf is not installed (scripts/install-deps.sh installs it).
Only the Python standard library is used.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST_EMUL = "127.77.91.1"
HOST_KERNEL = "127.0.0.1"
PORT = 47311


def env_for(case, lib, shm_dir):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("SHMNET_") or k == "LD_PRELOAD":
            del env[k]
    if case == "emulated":
        env.update(LD_PRELOAD=lib, SHMNET_PARTITIONS="127.77.91.0/24",
                   SHMNET_FALLBACK="never", SHMNET_DIR=shm_dir, SHMNET_UDP="1")
    elif case == "default":
        # The default mode (decision 46): both preloaded on 127.0.0.1,
        # the kernel's ports, the datagrams through shared memory.
        env.update(LD_PRELOAD=lib, SHMNET_DIR=shm_dir, SHMNET_UDP="1")
    return env


def sockperf(case, mode, size, secs, lib, shm_dir, port, iomux=None):
    """One sockperf client run against a fresh server; the parsed figures.
    `iomux`: sockperf waits in epoll_wait, poll or select (a feed file)."""
    host = HOST_EMUL if case == "emulated" else HOST_KERNEL
    env = env_for(case, lib, shm_dir)
    where = ["-i", host, "-p", str(port)]
    if iomux:
        feed = os.path.join(shm_dir, f"feed-{port}.txt")
        with open(feed, "w") as f:
            f.write(f"U:{host}:{port}\n")
        where = ["-f", feed, "-F", iomux]
    server = subprocess.Popen(["sockperf", "sr", *where], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.5)
        client = subprocess.run(["sockperf", mode, *where, "-t", str(secs),
                                 "-m", str(size)], env=env, capture_output=True, text=True,
                                timeout=secs + 30)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            served, _ = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            served, _ = server.communicate()
    out = client.stdout + client.stderr
    got = re.search(r"Total (\d+) messages received", served)
    if mode == "pp" and "_seqN > m_maxSequenceNo" in out and got:
        # sockperf's own ceiling (750,000 round trips a second of the run
        # and its 0.4 s warm-up: 1,800,011 at -t 2) was reached: the
        # client stops with an error. The mean from the server's count.
        rtt = (secs + 0.4) * 1e6 / int(got.group(1))
        return {"rtt_us": rtt, "rtt_p50_us": None, "capped": True}
    if client.returncode != 0:
        raise RuntimeError(f"sockperf {mode} ({case}) exited {client.returncode}: {out[-500:]}")
    if mode == "pp":
        avg = float(re.search(r"avg-latency=([\d.]+)", out).group(1))
        p50 = float(re.search(r"percentile 50\.000 =\s*([\d.]+)", out).group(1))
        return {"rtt_us": 2 * avg, "rtt_p50_us": 2 * p50}
    sent = float(re.search(r"Message Rate is (\d+)", out).group(1))
    took = float(re.search(r"messages sent in ([\d.]+) sec", out).group(1))
    received = int(got.group(1)) / took if got else 0.0
    return {"sent_per_s": sent, "received_per_s": received}


def dgrambench(exe, mode, size, secs):
    out = subprocess.run([exe, mode, str(size), str(secs)], capture_output=True, text=True,
                         timeout=secs + 40, check=True).stdout
    r = json.loads(out)
    if mode == "rtt":
        return {"rtt_us": r["rtt_us"], "rtt_p50_us": None}
    return {"sent_per_s": r["per_s"], "received_per_s": r["per_s"]}


CASES = ["emulated", "default", "kernel", "unix"]
FIGURES = [("pp", 64), ("tp", 64), ("tp", 1472)]


def run(lib, out, runs=3, secs=2.0, iomux=None):
    """Every figure for every case, `runs` interleaved rounds: medians."""
    if shutil.which("sockperf") is None:
        print("bench: sockperf not installed: UDP rows skipped "
              "(scripts/install-deps.sh installs it)", flush=True)
        return None
    os.makedirs(out, exist_ok=True)
    exe = os.path.join(out, "dgrambench")
    subprocess.run(["cc", "-O2", "-Wall", "-o", exe,
                    os.path.join(ROOT, "tests/bench/dgrambench.c")], check=True)
    raw = {f"{c} {m} {s}": [] for c in CASES for m, s in FIGURES}
    shm_dir = tempfile.mkdtemp(prefix="shmnet-udpbench.", dir="/tmp")
    port = PORT
    try:
        for r in range(runs):
            for mode, size in FIGURES:
                for case in CASES:
                    port += 1
                    if case == "unix":
                        v = dgrambench(exe, "rtt" if mode == "pp" else "rate", size, secs)
                    else:
                        v = sockperf(case, mode, size, secs, lib, shm_dir, port, iomux)
                    raw[f"{case} {mode} {size}"].append(v)
                    print(f"bench udp: run {r + 1} {case} {mode} {size} B: {v}", flush=True)
    finally:
        shutil.rmtree(shm_dir, ignore_errors=True)
    med = {}
    for key, vals in raw.items():
        fields = ("rtt_us", "rtt_p50_us") if "pp" in key else ("sent_per_s", "received_per_s")
        med[key] = {k: statistics.median([v[k] for v in vals if v.get(k) is not None])
                    if any(v.get(k) is not None for v in vals) else None for k in fields}
        med[key]["capped"] = sum(1 for v in vals if v.get("capped"))
    return {"runs": runs, "secs": secs, "iomux": iomux, "median": med, "raw": raw}


def report(u):
    if not u:
        return ""
    m = u["median"]
    waits = f", waiting in {u['iomux']}" if u.get("iomux") else ""
    lines = [f"### UDP (issue 16): sockperf{waits}, medians of {u['runs']} runs of {u['secs']} s",
             "",
             "| figure | emulated | default mode | kernel UDP | Unix dgram pair "
             "| emulated vs kernel (>1: better) | default mode vs kernel |",
             "|---|---|---|---|---|---|---|"]

    def row(name, key, field, unit, lower_better):
        e, d, k, x = (m.get(f"{c} {key}", {}).get(field) for c in CASES)
        ratio = lambda a: (k / a if lower_better else a / k) if a and k else None
        cell = lambda v: "-" if v is None else f"{v:,.1f} {unit}" if unit == "us" else f"{v:,.0f} {unit}"
        times = lambda r: "-" if r is None else f"{r:.2f}x"
        lines.append(f"| {name} | {cell(e)} | {cell(d)} | {cell(k)} | {cell(x)} | "
                     f"{times(ratio(e))} | {times(ratio(d))} |")

    row("64 B ping-pong RTT, mean", "pp 64", "rtt_us", "us", True)
    row("64 B ping-pong RTT, median", "pp 64", "rtt_p50_us", "us", True)
    row("64 B datagrams received/s", "tp 64", "received_per_s", "/s", False)
    row("64 B datagrams sent/s", "tp 64", "sent_per_s", "/s", False)
    row("1472 B datagrams received/s", "tp 1472", "received_per_s", "/s", False)
    row("1472 B datagrams sent/s", "tp 1472", "sent_per_s", "/s", False)
    capped = m["emulated pp 64"].get("capped")
    if capped:
        lines += ["", f"({capped} emulated ping-pong run(s) reached sockperf's ceiling of 750,000 "
                  "round trips a second: the mean RTT from the server's count)"]
    e, k = m["emulated pp 64"]["rtt_us"], m["kernel pp 64"]["rtt_us"]
    re_, rk = m["emulated tp 64"]["received_per_s"], m["kernel tp 64"]["received_per_s"]
    lines += ["", f"Issue 16 targets: RTT >= 20x better than kernel UDP: {k / e:.2f}x "
              f"({'met' if k / e >= 20 else 'missed'}); 64 B rate >= 10x kernel UDP: "
              f"{re_ / rk if rk else 0:.2f}x ({'met' if rk and re_ / rk >= 10 else 'missed'})", ""]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lib", default=os.path.join(ROOT, "target/release/libshmnet.so"))
    p.add_argument("--out", default=os.path.join(ROOT, "target/bench"))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--secs", type=float, default=2.0)
    p.add_argument("--iomux", choices=["epoll", "poll", "select"])
    a = p.parse_args()
    u = run(a.lib, a.out, a.runs, a.secs, a.iomux)
    print()
    print(report(u))
    if u:
        with open(os.path.join(a.out, "udp.json"), "w") as f:
            json.dump(u, f, indent=1)


if __name__ == "__main__":
    main()
