//! `shmnet nic`: a shared-memory NIC between network namespaces (issue 18,
//! docs/nic.md). The engine is the shmnet-nic crate; this is its command
//! line and the `--status` view of its status file.

use crate::units::{bytes, table};
use clap::Args;
use shmnet_nic::netns::NsSpec;
use shmnet_nic::{status, Config, Partition};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct NicArgs {
    /// A namespace to join: an `ip netns` name, a path such as
    /// /proc/PID/ns/net, or `current`; two to sixteen of them
    #[arg(long = "netns", value_name = "NS", required_unless_present = "status")]
    pub(crate) netns: Vec<String>,
    /// An address for the device in NS (repeatable; IPv4 or IPv6, with a
    /// prefix length). Default: 10.211.0.K/24 for the K-th namespace
    #[arg(long = "addr", value_name = "NS=ADDR/LEN")]
    pub(crate) addr: Vec<String>,
    /// The devices' MTU
    #[arg(long, default_value_t = 1500)]
    pub(crate) mtu: u32,
    /// The device name in every namespace
    #[arg(long, default_value = "shm0")]
    pub(crate) name: String,
    /// Descriptors per queue (a power of two, 16..=4096; default 256, or
    /// fewer where that would make a region over 1 GiB)
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub(crate) slots: u32,
    /// Device queues per namespace, each served by its own pair of
    /// threads (a multi-queue TUN; the kernel keeps a flow on one queue)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub(crate) queues: u32,
    /// No segmentation offload: MTU-sized packets only (no virtio-net
    /// headers, no 64 KiB super-packets)
    #[arg(long)]
    pub(crate) no_offload: bool,
    /// How long the forwarding threads poll after the last packet before
    /// they sleep, in microseconds (lower latency for more CPU)
    #[arg(long, value_name = "US", default_value_t = 0)]
    pub(crate) spin_us: u64,
    /// Where the counters are published (default: nic-NAME.json in the
    /// directory `shmnet ss` reads)
    #[arg(long, value_name = "PATH")]
    pub(crate) status_file: Option<PathBuf>,
    /// Run in the background: return once the devices are up (exit 0, the
    /// daemon's pid on stdout) or failed (exit 1); the daemon's messages go
    /// to the status file's path with `.log` appended
    #[arg(long)]
    pub(crate) daemon: bool,
    /// Show the partitions and counters of the running NIC NAME, and exit
    #[arg(long)]
    pub(crate) status: bool,
    /// With --status: the status file as JSON
    #[arg(long, requires = "status")]
    pub(crate) json: bool,
}

pub(crate) fn main(a: NicArgs) -> i32 {
    let path = a
        .status_file
        .clone()
        .unwrap_or_else(|| status::default_path(&a.name));
    if a.status {
        return show(&path, a.json);
    }
    let cfg = match config(&a, path) {
        Ok(c) => c,
        Err(e) => return crate::fail(format_args!("nic: {e}")),
    };
    // This binary can be a warden again (`shmnet __nic-warden`).
    shmnet_nic::warden::enable_respawn();
    if a.daemon {
        return daemon(&cfg);
    }
    let stop = shmnet_nic::stop_on_signals();
    match shmnet_nic::run(&cfg, stop) {
        Ok(()) => 0,
        Err(e) => crate::fail(format_args!("nic: {e}")),
    }
}

/// Forks; the child leaves the session, sends its messages to a log file
/// and runs the NIC, saying "ok" (or the error) on a pipe the parent
/// reads. Called while this process has one thread (before any is made).
fn daemon(cfg: &Config) -> i32 {
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, IntoRawFd};
    let log_path = match &cfg.status_file {
        Some(p) => p.with_extension("json.log"),
        None => return crate::fail(format_args!("nic: --daemon needs a status file")),
    };
    if let Err(e) = shmnet_nic::status::safe_dir(&log_path) {
        return crate::fail(format_args!("nic: {e}"));
    }
    // Made new, never through a symlink (the directory may be /tmp-like).
    let _ = std::fs::remove_file(&log_path);
    let log = match std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::fs::OpenOptions::new().write(true).create_new(true),
        libc::O_NOFOLLOW,
    )
    .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => return crate::fail(format_args!("nic: {}: {e}", log_path.display())),
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, owned just below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return crate::fail(format_args!(
            "nic: pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: fresh descriptors from pipe2, each owned once.
    let (mut rd, wr) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // SAFETY: one thread in this process (nothing has spawned any yet), so
    // the child may go on running Rust code.
    match unsafe { libc::fork() } {
        -1 => crate::fail(format_args!(
            "nic: fork: {}",
            std::io::Error::last_os_error()
        )),
        0 => {
            drop(rd);
            // SAFETY: setsid and dup2 onto the standard fds of this (child)
            // process; /dev/null is opened and its fd consumed by dup2.
            unsafe {
                libc::setsid();
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if null >= 0 {
                    libc::dup2(null, 0);
                    libc::dup2(null, 1);
                    libc::close(null);
                }
                libc::dup2(log.into_raw_fd(), 2);
            }
            let stop = shmnet_nic::stop_on_signals();
            let mut wr = Some(wr);
            let r = shmnet_nic::run_with(cfg, stop, || {
                if let Some(mut w) = wr.take() {
                    let _ = w.write_all(b"ok");
                }
            });
            if let (Err(e), Some(mut w)) = (&r, wr.take()) {
                let _ = write!(w, "{e}");
            }
            std::process::exit(if r.is_ok() { 0 } else { 1 })
        }
        pid => {
            drop(wr);
            let mut said = String::new();
            let _ = rd.read_to_string(&mut said);
            if said == "ok" {
                println!("{pid}");
                0
            } else {
                let mut st = 0;
                // SAFETY: reaping our own child, which failed and exits.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                crate::fail(format_args!("nic: {said}"))
            }
        }
    }
}

fn config(a: &NicArgs, status_file: PathBuf) -> Result<Config, String> {
    let specs = a
        .netns
        .iter()
        .map(|s| NsSpec::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if !(2..=16).contains(&specs.len()) {
        return Err("give two to sixteen --netns".into());
    }
    let mut addrs: Vec<Vec<(IpAddr, u8)>> = vec![Vec::new(); specs.len()];
    for s in &a.addr {
        let (ns, cidr) = s
            .split_once('=')
            .ok_or_else(|| format!("--addr {s}: expected NS=ADDR/LEN"))?;
        let i = a
            .netns
            .iter()
            .position(|n| n == ns)
            .ok_or_else(|| format!("--addr {s}: {ns} is not one of the --netns"))?;
        addrs[i].push(cidr_of(cidr).map_err(|e| format!("--addr {s}: {e}"))?);
    }
    let mut seen = Vec::new();
    for (k, list) in addrs.iter_mut().enumerate() {
        if list.is_empty() {
            list.push((IpAddr::from([10, 211, 0, k as u8 + 1]), 24));
        }
        for (ip, _) in list.iter() {
            if seen.contains(ip) {
                return Err(format!("address {ip} given to two namespaces"));
            }
            seen.push(*ip);
        }
    }
    // The kernel refuses an IPv6 address on a device below IPv6's minimum
    // MTU with a bare EINVAL (review s28 #14).
    if a.mtu < 1280 && seen.iter().any(IpAddr::is_ipv6) {
        return Err(format!(
            "--mtu {}: IPv6 addresses need an MTU of at least 1280",
            a.mtu
        ));
    }
    Ok(Config {
        name: a.name.clone(),
        mtu: a.mtu,
        slots: a.slots,
        offload: !a.no_offload,
        queues: a.queues,
        spin: Duration::from_micros(a.spin_us),
        partitions: specs
            .into_iter()
            .zip(addrs)
            .map(|(netns, addrs)| Partition { netns, addrs })
            .collect(),
        status_file: Some(status_file),
    })
}

/// "10.211.1.1/24" or "fd11:211::1/64"; no prefix: a host address.
fn cidr_of(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, l) = s.split_once('/').unwrap_or((s, ""));
    let ip: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = if l.is_empty() {
        max
    } else {
        l.parse::<u8>()
            .ok()
            .filter(|&n| n <= max)
            .ok_or_else(|| format!("bad prefix length {l:?}"))?
    };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(format!("{ip} cannot be a device address"));
    }
    Ok((ip, len))
}

fn show(path: &std::path::Path, json: bool) -> i32 {
    let s = match status::read(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return crate::fail(format_args!(
                "nic: no NIC running with that name ({} not found)",
                path.display()
            ))
        }
        Err(e) => return crate::fail(format_args!("nic: {}: {e}", path.display())),
    };
    let running = status::writer_alive(&s);
    let mut s = s;
    if !running {
        // Its devices went with it: no partition is up (review s28 #13).
        for p in &mut s.partitions {
            p.state = "down".into();
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return 0;
    }
    let state = if running {
        String::new()
    } else {
        " (not running: figures as it last wrote them)".into()
    };
    println!(
        "{}: pid {}, MTU {}, region {}{state}",
        s.name,
        s.pid,
        s.mtu,
        bytes(s.region_bytes)
    );
    let rows: Vec<Vec<String>> = s
        .partitions
        .iter()
        .map(|p| {
            let c = &p.counters;
            let drops = c.drop_spoofed
                + c.drop_no_route
                + c.drop_full
                + c.drop_peer_gone
                + c.drop_malformed
                + c.drop_rejected;
            vec![
                p.netns.clone(),
                p.addresses.join(","),
                p.state.clone(),
                c.tx_packets.to_string(),
                bytes(c.tx_bytes),
                c.rx_packets.to_string(),
                bytes(c.rx_bytes),
                drops.to_string(),
                c.drop_spoofed.to_string(),
                c.drop_no_route.to_string(),
                c.drop_full.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "NETNS",
                "ADDRESSES",
                "STATE",
                "TX-PKTS",
                "TX",
                "RX-PKTS",
                "RX",
                "DROPS",
                "SPOOFED",
                "NO-ROUTE",
                "FULL"
            ],
            &rows,
            &[false, false, false, true, true, true, true, true, true, true, true],
        )
    );
    0
}
