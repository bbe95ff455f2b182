#!/usr/bin/python3
"""make bench-nic: the shared-memory NIC (`shmnet nic`) against a veth pair
in the same two network namespaces, side by side in one run (issue 18).

Per run, interleaved (NIC, then veth): iperf3 TCP stream throughput, iperf3
64-byte UDP datagram rate (received), and UDP round trip of 64-byte
datagrams (median of N ping-pongs). Prints medians, ratios and the issue's
targets (TCP >= 0.5x veth, 64 B rate >= 1x, RTT <= 1.5x). Needs root,
iperf3 and `ip`. Namespaces shmnic-bench-*-PID, 10.211.8.0/24 (NIC) and
10.211.9.0/24 (veth) inside them only; all removed at the end.

Usage: bench-nic.py --shmnet PATH [--runs 3] [--seconds 3] [--rtt 2000]
                    [--nic-args "--spin-us 50"] [--out DIR]
"""
import argparse, json, os, shlex, signal, socket, statistics, subprocess, sys, time


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, **kw)


def rtt_client(addr, port, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    msg, rtts = b"x" * 64, []
    for _ in range(n):
        t = time.perf_counter_ns()
        s.sendto(msg, (addr, port))
        try:
            s.recvfrom(2048)
        except socket.timeout:
            continue
        rtts.append(time.perf_counter_ns() - t)
    s.sendto(b"quit", (addr, port))
    print(json.dumps({"p50_us": statistics.median(rtts) / 1e3, "n": len(rtts)}))


def rtt_server(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    s.settimeout(60)
    while True:
        d, a = s.recvfrom(2048)
        s.sendto(d, a)
        if d == b"quit":
            return


class Setup:
    def __init__(self, shmnet, nic_args, out):
        pid = os.getpid()
        self.a, self.b = f"shmnic-bench-a-{pid}", f"shmnic-bench-b-{pid}"
        self.nic = None
        for ns in (self.a, self.b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.a, "link", "add", "vb0", "type", "veth", "peer", "name", "vb1", "netns", self.b)
        for ns, dev, ip in ((self.a, "vb0", "10.211.9.1"), (self.b, "vb1", "10.211.9.2")):
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        status = os.path.join(out, "nic-status.json")
        cmd = [shmnet, "nic", "--netns", self.a, "--netns", self.b,
               "--addr", f"{self.a}=10.211.8.1/24", "--addr", f"{self.b}=10.211.8.2/24",
               "--status-file", status] + shlex.split(nic_args)
        self.nic = subprocess.Popen(cmd, stderr=open(os.path.join(out, "nic.log"), "w"))
        t0 = time.time()
        while not os.path.exists(status):
            if self.nic.poll() is not None or time.time() - t0 > 30:
                raise SystemExit("bench-nic: shmnet nic did not start: " + " ".join(cmd))
            time.sleep(0.05)

    def close(self):
        if self.nic and self.nic.poll() is None:
            self.nic.send_signal(signal.SIGTERM)
            self.nic.wait(timeout=10)
        for ns in (self.a, self.b):
            sh("ip", "netns", "del", ns, check=False, stderr=subprocess.DEVNULL)

    def iperf(self, server_ip, extra, seconds):
        srv = subprocess.Popen(["ip", "netns", "exec", self.b, "iperf3", "-s", "-1", "-B", server_ip],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        out = sh("ip", "netns", "exec", self.a, "iperf3", "-J", "-c", server_ip, "-t", str(seconds),
                 *extra, capture_output=True, text=True, check=False).stdout
        srv.wait(timeout=30)
        return json.loads(out)

    def tcp(self, ip, seconds):
        j = self.iperf(ip, [], seconds)
        return j["end"]["sum_received"]["bits_per_second"] / 1e9

    def udp64(self, ip, seconds):
        j = self.iperf(ip, ["-u", "-l", "64", "-b", "0"], seconds)
        s = j["end"]["sum"]
        return (s["packets"] - s["lost_packets"]) / s["seconds"] / 1e3

    def rtt(self, ip, n):
        me = os.path.abspath(__file__)
        srv = subprocess.Popen(["ip", "netns", "exec", self.b, sys.executable, me, "--rtt-server", ip])
        time.sleep(0.3)
        out = sh("ip", "netns", "exec", self.a, sys.executable, me, "--rtt-client", ip, "--rtt", str(n),
                 capture_output=True, text=True).stdout
        srv.wait(timeout=30)
        return json.loads(out)["p50_us"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shmnet", default="target/release/shmnet")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--rtt", type=int, default=2000)
    p.add_argument("--nic-args", default="")
    p.add_argument("--out", default="target/bench")
    p.add_argument("--rtt-server")
    p.add_argument("--rtt-client")
    a = p.parse_args()
    if a.rtt_server:
        return rtt_server(a.rtt_server, 7777)
    if a.rtt_client:
        return rtt_client(a.rtt_client, 7777, a.rtt)
    if os.geteuid() != 0:
        print("bench-nic: needs root (ip netns, TUN devices); skipped", file=sys.stderr)
        return
    os.makedirs(a.out, exist_ok=True)
    links = {"shm NIC": "10.211.8.2", "veth": "10.211.9.2"}
    res = {k: {"tcp": [], "udp64": [], "rtt": []} for k in links}
    setup = Setup(a.shmnet, a.nic_args, a.out)
    try:
        for r in range(a.runs):
            for name, ip in links.items():
                res[name]["tcp"].append(setup.tcp(ip, a.seconds))
                res[name]["udp64"].append(setup.udp64(ip, a.seconds))
                res[name]["rtt"].append(setup.rtt(ip, a.rtt))
                print(f"run {r + 1} {name}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in res[name].items()),
                      file=sys.stderr)
        with open(os.path.join(a.out, "nic-status.json")) as f:
            status = json.load(f)
    finally:
        setup.close()
    med = {n: {k: statistics.median(v) for k, v in m.items()} for n, m in res.items()}
    nic, veth = med["shm NIC"], med["veth"]
    rows = [("TCP stream (iperf3), Gbit/s", "tcp", ">= 0.5x", lambda x: x >= 0.5),
            ("64 B UDP received (iperf3 -b 0), kpps", "udp64", ">= 1x", lambda x: x >= 1.0),
            ("UDP 64 B round trip p50, us", "rtt", "<= 1.5x", lambda x: x <= 1.5)]
    print(f"\n{a.runs} runs, medians; load average {os.getloadavg()[0]:.2f}; nic args: {a.nic_args or '(none)'}\n")
    print("| figure | shm NIC | veth | NIC/veth | target |")
    print("|---|---:|---:|---:|---|")
    for label, k, tgt, ok in rows:
        ratio = nic[k] / veth[k]
        print(f"| {label} | {nic[k]:.2f} | {veth[k]:.2f} | {ratio:.2f}x | {tgt}: {'met' if ok(ratio) else 'missed'} |")
    c = status["partitions"][0]["counters"]
    print(f"\nNIC partition A after the run: {c['tx_packets']} packets sent, "
          f"{c['tx_bytes'] / max(c['tx_packets'], 1):.0f} B average (super-packets), "
          f"drops: full {c['drop_full']}, doorbells {c['doorbells']}, sleeps {c['sleeps']}")
    with open(os.path.join(a.out, "nic-results.json"), "w") as f:
        json.dump({"runs": res, "medians": med, "nic_args": a.nic_args}, f, indent=1)


if __name__ == "__main__":
    main()
