#!/usr/bin/python3
"""Usage: bench-gateway.py --lib LIB --gateway BIN --sockbench BIN [--out DIR] [--runs N] [--secs S] [--delay-ms D[,D...]]

Issue 17's benchmark: two network namespaces joined by one veth pair
(10.211.0.0/16 only inside them, deleted at the end), a gateway in each.
Side by side, interleaved, in one run:

- through the gateways: a preloaded program in A (SHMNET_REMOTE, emulated
  mode) -> shared memory -> A's gateway -> one TLS + HTTP/2 link over the
  veth -> B's gateway -> shared memory -> a preloaded server in B (emulated
  mode: no kernel listener);
- direct: the same programs unpreloaded, kernel TCP over the veth.

Rows: connection setup (sockbench connrate: connect, 1-byte request and
reply, close), 64 B round trip, a 64 KiB-write stream, and wrk against
nginx with `Connection: close` (a connection per request) and keep-alive.
Prints medians and ratios (gateway / direct), writes OUT/gateway.json.
Needs root (ip netns), openssl, nginx and wrk (scripts/install-deps.sh).

--delay-ms D (repeatable, or a comma list) runs every row again over a
link with D ms one-way delay: namespaces A - W - B, veths A<->W and W<->B,
and in W tests/bench/delayline (--delayline, built beside sockbench) copying
every frame between its two veth ends D ms after it came (ARP too: A and B
stay on one /24). The kernel here has no qdiscs (no netem). A and B's ends
send real MTU frames with checksums (ethtool -K tx off tso off gso off).
0 is the plain veth (the default). Each delay's table says the ping round
trip measured through it; OUT/gateway.json then holds one result per delay.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

A_LINK, B_LINK = "10.211.0.1", "10.211.0.2"
B_RANGE, B_SERVICE = "10.211.2.0/24", "10.211.2.2"
PEER = f"{B_LINK}:15008"
GATEWAY = "127.0.0.1:15001"
WRK_CONNS = 8


def fail(msg):
    print(f"bench-gateway: {msg}", file=sys.stderr)
    sys.exit(1)


def run(*argv):
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{' '.join(argv)}: {r.stderr.strip()}")
    return r.stdout


class Net:
    """Namespaces a and b, a veth pair between them; removed by close().
    With a delay: a - w - b, the delay line in w copying frames between
    its two veth ends `delay_ms` after they came."""

    def __init__(self, delay_ms=0.0, delayline=None):
        pid = os.getpid()
        self.a, self.b = f"shmbench-a-{pid}", f"shmbench-b-{pid}"
        self.w = f"shmbench-w-{pid}" if delay_ms > 0 else None
        self.line, self.line_counts = None, None
        self.made = []
        try:
            self.make(delay_ms, delayline)
        except BaseException:
            # fail() exits: the namespaces made so far go too.
            self.close()
            raise

    def make(self, delay_ms, delayline):
        for ns in (self.a, self.b, self.w):
            if ns:
                run("ip", "netns", "add", ns)
                self.made.append(ns)
                run("ip", "-n", ns, "link", "set", "lo", "up")
        if self.w:
            run("ip", "-n", self.a, "link", "add", "gwa", "type", "veth", "peer", "name", "wa",
                "netns", self.w)
            run("ip", "-n", self.b, "link", "add", "gwb", "type", "veth", "peer", "name", "wb",
                "netns", self.w)
            # W is a wire, not a host: no addresses (IPv6 link-local off too).
            for key in ("all", "default", "wa", "wb"):
                run("ip", "netns", "exec", self.w, "sysctl", "-qw",
                    f"net.ipv6.conf.{key}.disable_ipv6=1")
            # Frames the line copies must be what a wire carries: MTU-sized,
            # checksummed (a veth otherwise passes 64 KiB TSO frames and
            # leaves checksums to a "device" that never computes them).
            for ns, dev in ((self.a, "gwa"), (self.b, "gwb"), (self.w, "wa"), (self.w, "wb")):
                run("ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off",
                    "gso", "off", "gro", "off")
                run("ip", "-n", ns, "link", "set", dev, "up")
        else:
            run("ip", "-n", self.a, "link", "add", "gwa", "type", "veth", "peer", "name", "gwb",
                "netns", self.b)
        for ns, dev, ip in ((self.a, "gwa", A_LINK), (self.b, "gwb", B_LINK)):
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", self.b, "addr", "add", f"{B_SERVICE}/32", "dev", "lo")
        if self.w:
            # Real-time priority: on a loaded machine the line's wake-ups
            # would otherwise add milliseconds of jitter to the delay.
            rt = ["chrt", "-f", "50"] if shutil.which("chrt") else []
            self.line = subprocess.Popen(
                ["ip", "netns", "exec", self.w, *rt, delayline, "wa", "wb",
                 str(int(delay_ms * 1000))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            if self.line.stdout.readline().strip() != "ready":
                fail(f"delayline: {self.line.stderr.read()}")

    def ping(self, count=20):
        """The round trip A -> B in ms: (min, median), by ping in A; None
        without a ping (busybox's or iputils')."""
        ping = ["/bin/busybox", "ping"] if os.path.exists("/bin/busybox") else ["ping"]
        if not shutil.which(ping[0]):
            return None
        rt = ["chrt", "-f", "40"] if shutil.which("chrt") else []
        r = subprocess.run(["ip", "netns", "exec", self.a, *rt, *ping, "-c", str(count), "-i",
                            "0.05", B_LINK], capture_output=True, text=True)
        times = [float(t) for t in re.findall(r"time=([\d.]+) ms", r.stdout)]
        if not times:
            fail(f"ping {B_LINK}: {r.stdout} {r.stderr}")
        return min(times), statistics.median(times)

    def close(self):
        if self.line and self.line.poll() is None:
            self.line.terminate()
            out, _ = self.line.communicate(timeout=10)
            lines = [x for x in out.splitlines() if x.startswith("{")]
            self.line_counts = json.loads(lines[-1]) if lines else None
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def certs(d):
    """A CA and certificates a and b (IP SANs) made with openssl."""
    ossl = ["openssl"]
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run(*ossl, "req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem",
        "-subj", "/CN=bench CA", "-days", "2")
    for name, ip in (("a", A_LINK), ("b", B_LINK)):
        run(*ossl, "req", *ec, "-keyout", f"{d}/{name}.key", "-out", f"{d}/{name}.csr",
            "-subj", f"/CN={name}")
        ext = f"{d}/{name}.ext"
        with open(ext, "w") as f:
            f.write(f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth,clientAuth\n"
                    "basicConstraints=CA:FALSE\n")
        run(*ossl, "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey",
            f"{d}/ca.key", "-CAcreateserial", "-out", f"{d}/{name}.pem", "-days", "2",
            "-extfile", ext)


def in_ns(ns, env, argv):
    """argv run in namespace ns with env (a dict added to a clean one)."""
    pre = ["ip", "netns", "exec", ns, "env", "-i", f"PATH={os.environ.get('PATH', '/usr/bin:/bin')}"]
    return pre + [f"{k}={v}" for k, v in env.items()] + argv


class Gateway:
    def __init__(self, ns, env, args, log):
        self.log = log
        self.p = subprocess.Popen(in_ns(ns, env, args), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=open(log, "w"))

    def wait_for(self, what, secs=30):
        end = time.time() + secs
        while time.time() < end:
            with open(self.log) as f:
                if what in f.read():
                    return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.log) as f:
            fail(f"gateway: no {what!r} in its log:\n{f.read()}")

    def stop(self):
        self.p.kill()
        self.p.wait()


def sockbench(args, net, envs, path, mode, size, port):
    """One client run of sockbench MODE over `path`; its JSON result."""
    host = B_SERVICE if path == "gateway" else B_LINK
    common = [mode, "--tcp", host, "--port", str(port), "--size", str(size), "--secs",
              str(args.secs)]
    server = subprocess.Popen(in_ns(net.b, envs[path]["b"], [args.sockbench, *common, "--serve"]),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if not line.startswith('{"ready"'):
            fail(f"{path} {mode} server: {line!r} {server.stderr.read()}")
        r = subprocess.run(in_ns(net.a, envs[path]["a"], [args.sockbench, *common, "--client"]),
                           capture_output=True, text=True, timeout=args.secs + 60)
        if r.returncode != 0:
            fail(f"{path} {mode} client: {r.stderr.strip()}")
        server.wait(timeout=30)
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def nginx(net, env, d, name, listen):
    prefix = os.path.join(d, name)
    os.makedirs(os.path.join(prefix, "www"))
    os.makedirs(os.path.join(prefix, "tmp"))
    with open(os.path.join(prefix, "www", "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write("daemon off; master_process off; pid nginx.pid; error_log stderr crit;\n"
                "events { worker_connections 1024; }\n"
                "http { access_log off; client_body_temp_path tmp;\n"
                f"server {{ listen {listen} reuseport; root www; }} }}\n")
    p = subprocess.Popen(in_ns(net.b, env, ["/usr/sbin/nginx", "-p", prefix + "/", "-c",
                                            "nginx.conf", "-e", "stderr"]),
                         stdin=subprocess.DEVNULL)
    end = time.time() + 20
    while not os.path.exists(os.path.join(prefix, "nginx.pid")):
        if time.time() > end or p.poll() is not None:
            fail(f"nginx {name} did not start")
        time.sleep(0.05)
    return p


def wrk(args, net, env, url, close):
    hdr = ["-H", "Connection: close"] if close else []
    r = subprocess.run(in_ns(net.a, env, ["wrk", "-t1", f"-c{WRK_CONNS}", f"-d{args.wrk_secs}", *hdr, url]),
                       capture_output=True, text=True, timeout=args.wrk_secs + 60)
    m = re.search(r"Requests/sec:\s*([\d.]+)", r.stdout)
    errors = re.search(r"Socket errors: (.*)", r.stdout)
    if r.returncode != 0 or not m:
        fail(f"wrk {url}: {r.stdout} {r.stderr}")
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", r.stdout)
    lat_ms = float(lat.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[lat.group(2)] if lat else None
    return {"req_per_s": float(m.group(1)), "latency_ms": lat_ms,
            "errors": errors.group(1) if errors else ""}


def main():
    p = argparse.ArgumentParser(usage=__doc__.split("\n\n")[0][len("Usage: "):])
    p.add_argument("--lib", required=True)
    p.add_argument("--gateway", required=True, help="the shmnet-gateway binary")
    p.add_argument("--sockbench", required=True)
    p.add_argument("--out", default="target/bench")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--secs", type=float, default=1.0)
    p.add_argument("--wrk-secs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="the gateways' --threads")
    p.add_argument("--only", default=None, help="rows to run, comma-separated (connrate,rtt,stream,wrk)")
    p.add_argument("--delay-ms", action="append", default=None,
                   help="one-way delay(s) through the delay line, ms; repeatable or a comma "
                   "list; 0 is the plain veth (the default)")
    p.add_argument("--gateway-arg", action="append", default=[],
                   help="an option for both gateways (repeatable, e.g. --gateway-arg=--stream-window=8388608)")
    p.add_argument("--delayline", default=None,
                   help="the delayline binary (default: beside --sockbench)")
    args = p.parse_args()
    delays = [float(x) for v in (args.delay_ms or ["0"]) for x in v.split(",") if x.strip()]
    if args.delayline is None:
        args.delayline = os.path.join(os.path.dirname(args.sockbench), "delayline")
    if os.geteuid() != 0:
        print("bench-gateway: skipped (needs root for ip netns)")
        return
    for tool in ("ip", "openssl", "wrk"):
        if not shutil.which(tool):
            fail(f"needs {tool} (scripts/install-deps.sh)")
    if any(x > 0 for x in delays) and not shutil.which("ethtool"):
        fail("--delay-ms needs ethtool (scripts/install-deps.sh)")
    for f in (args.lib, args.gateway, args.sockbench, "/usr/sbin/nginx",
              *([args.delayline] if any(x > 0 for x in delays) else [])):
        if not os.path.exists(f):
            fail(f"{f} not found")
    lib = os.path.abspath(args.lib)
    results = [suite(args, lib, delay) for delay in delays]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gateway.json"), "w") as f:
        json.dump(results[0] if delays == [0.0] else {"delays": results}, f, indent=1)
    if len(results) > 1:
        print("\nRatios (gateway vs direct, >1: the gateways better) by one-way delay")
        labels = [r["label"] for r in results[0]["rows"]]
        print(f"{'':28} " + " ".join(f"{r['delay_ms']:>8g} ms" for r in results))
        for i, label in enumerate(labels):
            print(f"{label:28} " + " ".join(f"{r['rows'][i]['ratio']:10.2f}x" for r in results))


def suite(args, lib, delay):
    """Every row at one one-way delay (0: the plain veth); its result."""
    d = tempfile.mkdtemp(prefix="shmnet-bench-gw-")
    os.chmod(d, 0o755)
    net, procs = Net(delay, args.delayline), []
    try:
        ping = net.ping()
        certs(d)
        shm_a, shm_b = os.path.join(d, "shm-a"), os.path.join(d, "shm-b")
        os.makedirs(shm_a)
        os.makedirs(shm_b)
        env_b = {"LD_PRELOAD": lib, "SHMNET_PARTITIONS": B_RANGE, "SHMNET_FALLBACK": "never",
                 "SHMNET_DIR": shm_b}
        env_a = {"LD_PRELOAD": lib, "SHMNET_REMOTE": B_RANGE, "SHMNET_FALLBACK": "never",
                 "SHMNET_DIR": shm_a}
        env_gw_a = {"LD_PRELOAD": lib, "SHMNET_GATEWAY": GATEWAY, "SHMNET_DIR": shm_a}
        ident = lambda n: ["--cert", f"{d}/{n}.pem", "--key", f"{d}/{n}.key", "--ca",
                           f"{d}/ca.pem"]
        threads = (["--threads", str(args.threads)] if args.threads else []) + args.gateway_arg
        gw_b = Gateway(net.b, env_b, [args.gateway, *threads, "--peer-listen", PEER, "--serve", B_RANGE,
                                      *ident("b")], f"{d}/gw-b.log")
        procs.append(gw_b)
        gw_b.wait_for("peers: listening")
        gw_a = Gateway(net.a, env_gw_a, [args.gateway, *threads, "--listen", GATEWAY, "--remote",
                                         f"{B_RANGE}={PEER}", *ident("a")], f"{d}/gw-a.log")
        procs.append(gw_a)
        gw_a.wait_for("links established: 1")
        envs = {"gateway": {"a": env_a, "b": env_b}, "direct": {"a": {}, "b": {}}}

        only = set(args.only.split(",")) if args.only else {"connrate", "rtt", "stream", "wrk"}
        rows = [r for r in [("connrate", 1, "per_s", "connections/s"),
                            ("rtt", 64, "rtt_us", "64 B RTT µs"),
                            ("stream", 65536, "gbps", "64 KiB stream GB/s")] if r[0] in only]
        vals = {}
        port = 20000
        for run_no in range(args.runs):
            for mode, size, field, _ in rows:
                for path in ("gateway", "direct"):
                    port += 1
                    r = sockbench(args, net, envs, path, mode, size, port)
                    vals.setdefault((mode, path), []).append(r[field])
        ng = [nginx(net, env_b, d, "ng-gw", f"{B_SERVICE}:8080"),
              nginx(net, {}, d, "ng-direct", f"{B_LINK}:8081")] if "wrk" in only else []
        wrk_errors, wrk_latency = {}, {}
        try:
            urls = {"gateway": f"http://{B_SERVICE}:8080/1k.bin",
                    "direct": f"http://{B_LINK}:8081/1k.bin"}
            for run_no in range(args.runs if "wrk" in only else 0):
                for close in (True, False):
                    for path in ("gateway", "direct"):
                        r = wrk(args, net, envs[path]["a"], urls[path], close)
                        key = ("wrk-close" if close else "wrk-keepalive", path)
                        vals.setdefault(key, []).append(r["req_per_s"])
                        if r["latency_ms"] is not None:
                            wrk_latency.setdefault(f"{key[0]} {path}", []).append(r["latency_ms"])
                        if r["errors"]:
                            wrk_errors.setdefault(f"{key[0]} {path}", []).append(r["errors"])
        finally:
            for n in ng:
                n.kill()
                n.wait()
        if "wrk" in only:
            rows += [("wrk-close", 0, "req_per_s", "wrk Connection: close req/s"),
                     ("wrk-keepalive", 0, "req_per_s", "wrk keep-alive req/s")]
        result = {"runs": args.runs, "secs": args.secs, "threads": args.threads, "rows": [],
                  "wrk_errors": wrk_errors, "wrk_latency_ms": wrk_latency,
                  "load": os.getloadavg()}
        result["delay_ms"] = delay
        where = (f"A - delay line {delay:g} ms each way - B" if delay > 0
                 else "two namespaces, one veth")
        if ping:
            result["ping_ms"] = {"min": ping[0], "median": ping[1]}
            where += f"; ping {ping[0]:.2f} ms min, {ping[1]:.2f} median"
        print(f"\nGateways ({where}; {args.runs} runs, medians; load "
              f"{os.getloadavg()[0]:.1f})")
        print(f"{'':28} {'through gateways':>17} {'direct TCP':>12} {'ratio':>7}")
        for mode, size, field, label in rows:
            g, k = statistics.median(vals[(mode, "gateway")]), statistics.median(vals[(mode, "direct")])
            # Lower is better for a round trip: the ratio says how many times
            # better the gateway path is, for every row alike.
            ratio = k / g if field == "rtt_us" else g / k
            print(f"{label:28} {g:17.2f} {k:12.2f} {ratio:6.2f}x")
            result["rows"].append({"row": mode, "label": label, "gateway": vals[(mode, "gateway")],
                                   "direct": vals[(mode, "direct")], "ratio": ratio})
        if ping and delay > 0:
            # What a connection or a request costs in round trips of the
            # line (ping's median): a handshake is one.
            rtts = {}
            if ("connrate", "gateway") in vals:
                for path in ("gateway", "direct"):
                    rtts[f"connrate {path}"] = 1e3 / statistics.median(
                        vals[("connrate", path)]) / ping[1]
            # wrk's latency starts after its connect: from the rate instead
            # (WRK_CONNS connections, each a request at a time).
            if ("wrk-close", "gateway") in vals:
                for path in ("gateway", "direct"):
                    rtts[f"wrk-close {path}"] = WRK_CONNS * 1e3 / statistics.median(
                        vals[("wrk-close", path)]) / ping[1]
            result["ping_rtts"] = rtts
            if rtts:
                print("in ping round trips (median): " + ", ".join(
                    f"{k} {v:.2f}" for k, v in rtts.items()))
        if wrk_latency:
            print("wrk mean latency, ms (medians): " + ", ".join(
                f"{k} {statistics.median(v):.2f}" for k, v in wrk_latency.items()))
        if wrk_errors:
            print(f"wrk socket errors: {wrk_errors}")
    finally:
        for g in procs:
            g.stop()
        net.close()
        shutil.rmtree(d, ignore_errors=True)
    if net.line_counts:
        result["delayline"] = net.line_counts
        print(f"delay line: {net.line_counts}")
    return result


if __name__ == "__main__":
    main()
