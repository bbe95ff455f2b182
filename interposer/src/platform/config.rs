//! Configuration from the environment, read once, lazily, on first use.
//!
//! Loading never blocks: it runs inside the re-entry guard (so anything it
//! calls goes straight to libc) and is published with a lock-free
//! compare-exchange ([`crate::platform::sys::Publish`]), so a hook running on another
//! thread, in a signal handler or in a child forked mid-load never waits on
//! it. An invalid value prints one `libshmnet:` line on stderr and disables
//! the library: every call then passes through. Nothing here aborts.
//!
//! An empty variable counts as unset.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use crate::platform::log::{self, Level};
use crate::platform::sys::Publish;

pub const DEFAULT_PARTITIONS: &str = "127.0.0.0/8,::1/128";
/// Per direction; measured (docs/configuration.md): 64 KiB streaming went
/// from 7.5 GB/s with 1 MiB to 20-23 GB/s with 2 MiB on this machine.
pub const DEFAULT_RING_BYTES: usize = 2 << 20;
pub const MIN_RING_BYTES: usize = 64 << 10;
pub const MAX_RING_BYTES: usize = 256 << 20;
/// Spin budget before sleeping. Placeholder until measured.
pub const DEFAULT_SPIN_US: u32 = 50;

/// What to do when no shared-memory listener answers a partition address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Connect through kernel TCP instead (built in a later issue).
    Tcp,
    /// Fail with ECONNREFUSED; never use kernel TCP for a partition address.
    Never,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `SHMNET_PARTITIONS`: addresses diverted to shared memory.
    pub partitions: Vec<IpNet>,
    /// `SHMNET_FALLBACK`.
    pub fallback: Fallback,
    /// `SHMNET_REMOTE`: addresses of other hosts reached through the local
    /// gateway (docs/design/gateway.md); a partition address is not one.
    pub remote: Vec<IpNet>,
    /// `SHMNET_GATEWAY`: a listener on exactly this address also answers
    /// as this namespace's gateway (the gateway process sets it).
    pub gateway: Option<SocketAddr>,
    /// `SHMNET_DIR` when set (absolute); else the per-user default, worked
    /// out when it is used (see [`Config::default_dir`]).
    pub dir: Option<PathBuf>,
    /// `XDG_RUNTIME_DIR` when set and absolute (the default directory's
    /// parent, if it belongs to the user who asks).
    pub runtime_dir: Option<PathBuf>,
    /// `SHMNET_ALLOW`: peers admitted besides the same uid and root.
    pub allow: crate::platform::policy::Allow,
    /// `SHMNET_RING_BYTES`: ring capacity per direction.
    pub ring_bytes: usize,
    /// `SHMNET_SPIN_US`: spin budget before sleeping, in microseconds.
    pub spin_us: u32,
    /// `SHMNET_DEFER`: epoll members may leave their doorbell flags down
    /// while their set's only waiter is busy (default on; `0` turns it
    /// off).
    pub defer: bool,
    /// `SHMNET_UDP`: UDP on partition addresses is carried by shared memory
    /// (issue 16). Unset: on in the default mode (decision 65: the kernel
    /// owns the ports there, and a socket is the kernel's own file until it
    /// is carried, decision 64), off in the emulated mode (a fork server
    /// whose parent keeps the socket cannot receive in its child there,
    /// compatibility.md). `0` and `1` say so in both.
    pub udp: bool,
    /// `SHMNET_ASYNC_CONNECT`: a non-blocking connect that offers a kept
    /// segment returns EINPROGRESS at once (decision 32; off by default:
    /// on for part of session 30, then off again after review s30 found
    /// regressions of the default; `1` turns it on).
    pub async_connect: bool,
    /// `SHMNET_URING`: an accept at the fd limit takes the connection's
    /// memfd through an io_uring fixed-file slot (decision 58; default on
    /// where the kernel allows it; `0` turns it off).
    pub uring: bool,
    /// `SHMNET_URING=1` given: io_uring is used even where
    /// /proc/self/status shows a seccomp filter (one known to allow it).
    pub uring_forced: bool,
    /// `SHMNET_LOG`: `None` is off.
    pub log_level: Option<Level>,
    /// `SHMNET_LOG_FILE`: `None` is stderr.
    pub log_file: Option<PathBuf>,
}

/// An invalid variable: displayed as `VAR: problem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn invalid(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

fn parse_fallback(v: &str) -> Result<Fallback, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(Fallback::Tcp),
        "never" => Ok(Fallback::Never),
        _ => Err(invalid(
            "SHMNET_FALLBACK",
            format!("{v:?} is neither \"tcp\" nor \"never\""),
        )),
    }
}

fn absolute_dir(dir: PathBuf) -> Result<PathBuf, ConfigError> {
    if dir.is_absolute() {
        Ok(dir)
    } else {
        Err(invalid(
            "SHMNET_DIR",
            format!("{:?} is not an absolute path", dir),
        ))
    }
}

fn parse_spin_us(v: &str) -> Result<u32, ConfigError> {
    v.trim().parse::<u32>().map_err(|e| {
        invalid(
            "SHMNET_SPIN_US",
            format!("{v:?} is not a whole number of microseconds: {e}"),
        )
    })
}

impl Config {
    /// Build from a variable lookup (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Config, ConfigError> {
        // Empty counts as unset; non-UTF-8 is an error except for paths.
        let text = |var: &'static str| -> Result<Option<String>, ConfigError> {
            match lookup(var) {
                None => Ok(None),
                Some(v) if v.is_empty() => Ok(None),
                Some(v) => v
                    .into_string()
                    .map(Some)
                    .map_err(|_| invalid(var, "value is not valid UTF-8")),
            }
        };
        let path = |var: &'static str| lookup(var).filter(|v| !v.is_empty()).map(PathBuf::from);

        let partitions = parse_partitions(
            text("SHMNET_PARTITIONS")?
                .as_deref()
                .unwrap_or(DEFAULT_PARTITIONS),
        )
        .map_err(|p| invalid("SHMNET_PARTITIONS", p))?;

        let fallback = match text("SHMNET_FALLBACK")? {
            None => Fallback::Tcp,
            Some(v) => parse_fallback(&v)?,
        };

        let remote = match text("SHMNET_REMOTE")? {
            None => Vec::new(),
            Some(v) => parse_partitions(&v).map_err(|p| invalid("SHMNET_REMOTE", p))?,
        };
        let gateway = match text("SHMNET_GATEWAY")? {
            None => None,
            Some(v) => Some(v.trim().parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "SHMNET_GATEWAY",
                    format!("{v:?} is not an address:port ({e})"),
                )
            })?),
        };

        let dir = path("SHMNET_DIR").map(absolute_dir).transpose()?;
        let runtime_dir = path("XDG_RUNTIME_DIR").filter(|d| d.is_absolute());

        let allow = match text("SHMNET_ALLOW")? {
            None => crate::platform::policy::Allow::default(),
            Some(v) => {
                crate::platform::policy::Allow::parse(&v).map_err(|p| invalid("SHMNET_ALLOW", p))?
            }
        };

        let ring_bytes = match text("SHMNET_RING_BYTES")? {
            None => DEFAULT_RING_BYTES,
            Some(v) => parse_ring_bytes(&v).map_err(|p| invalid("SHMNET_RING_BYTES", p))?,
        };

        let spin_us = match text("SHMNET_SPIN_US")? {
            None => DEFAULT_SPIN_US,
            Some(v) => parse_spin_us(&v)?,
        };
        let defer = match text("SHMNET_DEFER")?.as_deref() {
            // On unless turned off (decision 22; the wrk read errors that
            // had it off for a while are decision 26).
            None | Some("1") => true,
            Some("0") => false,
            Some(v) => return Err(invalid("SHMNET_DEFER", format!("{v:?} is not 0 or 1"))),
        };
        let udp = match text("SHMNET_UDP")?.as_deref() {
            None => fallback != Fallback::Never,
            Some("0") => false,
            Some("1") => true,
            Some(v) => return Err(invalid("SHMNET_UDP", format!("{v:?} is not 0 or 1"))),
        };
        let async_connect = match text("SHMNET_ASYNC_CONNECT")?.as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(v) => {
                return Err(invalid(
                    "SHMNET_ASYNC_CONNECT",
                    format!("{v:?} is not 0 or 1"),
                ))
            }
        };
        let (uring, uring_forced) = match text("SHMNET_URING")?.as_deref() {
            None => (true, false),
            Some("1") => (true, true),
            Some("0") => (false, false),
            Some(v) => return Err(invalid("SHMNET_URING", format!("{v:?} is not 0 or 1"))),
        };
        let log_level = match text("SHMNET_LOG")? {
            None => None,
            Some(v) => Level::parse(&v).map_err(|()| {
                invalid(
                    "SHMNET_LOG",
                    format!("{v:?} is not one of off|error|warn|info|debug|trace"),
                )
            })?,
        };

        Ok(Config {
            partitions,
            fallback,
            remote,
            gateway,
            dir,
            runtime_dir,
            allow,
            ring_bytes,
            spin_us,
            defer,
            udp,
            async_connect,
            uring,
            uring_forced,
            log_level,
            log_file: path("SHMNET_LOG_FILE"),
        })
    }

    /// Whether `ip` is of another host reached through the gateway
    /// (`SHMNET_REMOTE`) and not a partition address.
    pub fn is_remote_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_canonical(),
            ip => ip,
        };
        !self.is_partition_ip(ip) && self.remote.iter().any(|net| net.contains(&ip))
    }

    /// Whether `ip` is in a partition. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`, what a dual-stack socket sees) also matches the
    /// IPv4 ranges.
    pub fn is_partition_ip(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.partitions
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4)))
    }
}

/// Parse a comma-separated list of CIDRs; a bare address is a host route.
pub fn parse_partitions(list: &str) -> Result<Vec<IpNet>, String> {
    let mut nets = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net = match item.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(e) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(format!("invalid CIDR {item:?}: {e}")),
            },
        };
        nets.push(net);
    }
    if nets.is_empty() {
        return Err(format!("no CIDR in {list:?}"));
    }
    Ok(nets)
}

/// Parse a ring size: bytes, or with a K/M suffix (binary: 1K = 1024).
pub fn parse_ring_bytes(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let (digits, unit) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1usize << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1usize << 20),
        _ => (v, 1),
    };
    let n: usize = digits
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a size like 1048576, 256K or 1M"))?;
    match n.checked_mul(unit) {
        Some(bytes) if (MIN_RING_BYTES..=MAX_RING_BYTES).contains(&bytes) => Ok(bytes),
        _ => Err(format!("{value:?} is outside 64K..256M")),
    }
}

impl Config {
    /// `SHMNET_DIR` for a process running as `euid`: the explicit one, else
    /// `$XDG_RUNTIME_DIR/shmnet` when `runtime_dir_is_ours` (that directory
    /// belongs to `euid`: a program that switched user must not use the
    /// runtime directory of the user it was), else `/tmp/shmnet-<euid>`.
    pub fn default_dir(&self, euid: u32, runtime_dir_is_ours: bool) -> PathBuf {
        match (&self.dir, &self.runtime_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(run)) if runtime_dir_is_ours => run.join("shmnet"),
            _ => PathBuf::from(format!("/tmp/shmnet-{euid}")),
        }
    }
}

enum Loaded {
    /// Boxed: published once, read through a reference.
    Enabled(Box<Config>),
    Disabled,
}

static LOADED: Publish<Loaded> = Publish::new();

/// The configuration, loading it on first use; `None` when the library is
/// disabled by an invalid value (everything passes through).
pub fn get() -> Option<&'static Config> {
    let loaded = match LOADED.get() {
        Some(loaded) => loaded,
        None => load(),
    };
    match loaded {
        Loaded::Enabled(config) => Some(config.as_ref()),
        Loaded::Disabled => None,
    }
}

/// Whether `addr` is a partition address (false when disabled).
pub fn is_partition(addr: &SocketAddr) -> bool {
    get().is_some_and(|c| c.is_partition_ip(addr.ip()))
}

#[cold]
fn load() -> &'static Loaded {
    let parsed = Config::from_lookup(|k| std::env::var_os(k)).and_then(|config| {
        // Only when logging is on: an unread FIFO or a dead NFS mount
        // named there must not matter to a program that logs nothing.
        let file = match (&config.log_file, config.log_level) {
            (None, _) | (_, None) => None,
            (Some(path), Some(_)) => Some(log::open_file(path).map_err(|e| {
                invalid(
                    "SHMNET_LOG_FILE",
                    format!("cannot open {}: {e}", path.display()),
                )
            })?),
        };
        Ok((config, file))
    });
    let (loaded, file, error) = match parsed {
        Ok((config, file)) => (Loaded::Enabled(Box::new(config)), file, None),
        Err(e) => (Loaded::Disabled, None, Some(e)),
    };
    // Side effects only for the thread whose value was published, so a race
    // still prints one line and attaches one file.
    let (loaded, ours) = LOADED.publish(loaded);
    if ours {
        if let Some(e) = error {
            log::stderr_line(format_args!("{e}; passing all sockets through"));
        }
        if let Loaded::Enabled(config) = loaded {
            if let Some(fd) = file {
                log::attach_file(fd);
            }
            log::set_max_level(config.log_level);
            log!(debug, "configuration: {config:?}");
        }
    }
    loaded
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.partitions, parse_partitions(DEFAULT_PARTITIONS).unwrap());
        assert_eq!(c.fallback, Fallback::Tcp);
        assert_eq!(c.dir, None);
        assert_eq!(
            c.default_dir(1000, false),
            PathBuf::from("/tmp/shmnet-1000")
        );
        assert_eq!(c.allow, crate::platform::policy::Allow::default());
        assert_eq!(c.ring_bytes, DEFAULT_RING_BYTES);
        assert_eq!(c.spin_us, DEFAULT_SPIN_US);
        // On (decision 22): a commit that turned UDP off flipped this for a
        // session (2026-12-06) and nothing noticed; the benchmarks set it.
        assert!(c.defer);
        // On in the default mode (decision 65).
        assert!(c.udp);
        // Off (decision 32: review s30 found regressions of the default).
        assert!(!c.async_connect);
        assert_eq!(c.log_level, None);
        assert_eq!(c.log_file, None);
    }

    #[test]
    fn dir_prefers_xdg_runtime_dir_then_explicit() {
        let c = cfg(&[("XDG_RUNTIME_DIR", "/run/user/7")]).unwrap();
        assert_eq!(c.default_dir(7, true), PathBuf::from("/run/user/7/shmnet"));
        // A program that switched user does not use the old user's one.
        assert_eq!(c.default_dir(8, false), PathBuf::from("/tmp/shmnet-8"));
        let c = cfg(&[("XDG_RUNTIME_DIR", "relative")]).unwrap();
        assert_eq!(c.default_dir(1000, true), PathBuf::from("/tmp/shmnet-1000"));
        let c = cfg(&[("XDG_RUNTIME_DIR", "/run/x"), ("SHMNET_DIR", "/srv/s")]).unwrap();
        assert_eq!(c.default_dir(3, true), PathBuf::from("/srv/s"));
        let e = cfg(&[("SHMNET_DIR", "rel/dir")]).unwrap_err();
        assert_eq!(e.var, "SHMNET_DIR");
    }

    /// UDP unset: on in the default mode, off in the emulated mode
    /// (decision 65); `0` and `1` say so in both.
    #[test]
    fn udp_follows_the_mode_unless_set() {
        let never = ("SHMNET_FALLBACK", "never");
        assert!(cfg(&[]).unwrap().udp);
        assert!(!cfg(&[never]).unwrap().udp);
        assert!(!cfg(&[("SHMNET_UDP", "0")]).unwrap().udp);
        assert!(cfg(&[never, ("SHMNET_UDP", "1")]).unwrap().udp);
        assert!(!cfg(&[never, ("SHMNET_UDP", "0")]).unwrap().udp);
        assert_eq!(cfg(&[("SHMNET_UDP", "yes")]).unwrap_err().var, "SHMNET_UDP");
    }

    #[test]
    fn all_values_parse() {
        let c = cfg(&[
            ("SHMNET_PARTITIONS", " 127.77.0.0/16 , fd00::/8,127.1.2.3,"),
            ("SHMNET_FALLBACK", "never"),
            ("SHMNET_RING_BYTES", "256K"),
            ("SHMNET_SPIN_US", "0"),
            ("SHMNET_LOG", "debug"),
            ("SHMNET_LOG_FILE", "/tmp/x.log"),
        ])
        .unwrap();
        let want: Vec<IpNet> = ["127.77.0.0/16", "fd00::/8", "127.1.2.3/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(c.partitions, want);
        assert_eq!(c.fallback, Fallback::Never);
        assert_eq!(c.ring_bytes, 256 << 10);
        assert_eq!(c.spin_us, 0);
        assert_eq!(c.log_level, Some(Level::Debug));
        assert_eq!(c.log_file, Some(PathBuf::from("/tmp/x.log")));
    }

    #[test]
    fn remote_ranges_and_gateway() {
        let c = cfg(&[
            ("SHMNET_REMOTE", "10.211.2.0/24, 127.0.0.0/8"),
            ("SHMNET_GATEWAY", "127.0.0.1:15001"),
        ])
        .unwrap();
        assert!(c.is_remote_ip("10.211.2.9".parse().unwrap()));
        assert!(c.is_remote_ip("::ffff:10.211.2.9".parse().unwrap()));
        assert!(!c.is_remote_ip("10.211.3.9".parse().unwrap()));
        // A partition address is never remote.
        assert!(!c.is_remote_ip("127.0.0.1".parse().unwrap()));
        assert_eq!(c.gateway, Some("127.0.0.1:15001".parse().unwrap()));
        for (var, bad) in [
            ("SHMNET_REMOTE", "10.211.2.0/33"),
            ("SHMNET_GATEWAY", "127.0.0.1"),
        ] {
            assert_eq!(cfg(&[(var, bad)]).unwrap_err().var, var);
        }
    }

    #[test]
    fn empty_means_unset() {
        assert_eq!(
            cfg(&[("SHMNET_PARTITIONS", ""), ("SHMNET_LOG", "")]).unwrap(),
            cfg(&[]).unwrap()
        );
    }

    #[test]
    fn errors_name_the_variable() {
        for (var, value, needle) in [
            ("SHMNET_PARTITIONS", "foo", "invalid CIDR \"foo\""),
            ("SHMNET_PARTITIONS", "127.0.0.0/33", "invalid CIDR"),
            ("SHMNET_PARTITIONS", " , ", "no CIDR"),
            ("SHMNET_FALLBACK", "maybe", "neither"),
            ("SHMNET_RING_BYTES", "12X", "not a size"),
            ("SHMNET_RING_BYTES", "1K", "outside"),
            ("SHMNET_RING_BYTES", "1024M", "outside"),
            ("SHMNET_RING_BYTES", "99999999999999999999M", "not a size"),
            ("SHMNET_SPIN_US", "-5", "whole number"),
            ("SHMNET_LOG", "loud", "off|error"),
            ("SHMNET_ALLOW", "no-such-user-here", "no user"),
        ] {
            let e = cfg(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{value}");
            let line = e.to_string();
            assert!(line.starts_with(&format!("{var}: ")), "{line}");
            assert!(line.contains(needle), "{line}");
        }
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_bytes("65536"), Ok(65536));
        assert_eq!(parse_ring_bytes("64k"), Ok(65536));
        assert_eq!(parse_ring_bytes("1M"), Ok(1 << 20));
        assert_eq!(parse_ring_bytes("256M"), Ok(256 << 20));
        assert!(parse_ring_bytes("65535").is_err());
        assert!(parse_ring_bytes("257M").is_err());
        assert!(parse_ring_bytes("M").is_err());
        assert!(parse_ring_bytes("").is_err());
    }

    #[test]
    fn partition_matching() {
        let c = cfg(&[]).unwrap();
        let yes = ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"];
        let no = ["128.0.0.1", "::2", "::ffff:128.0.0.1", "0.0.0.0", "::"];
        for ip in yes {
            assert!(c.is_partition_ip(ip.parse().unwrap()), "{ip}");
        }
        for ip in no {
            assert!(!c.is_partition_ip(ip.parse().unwrap()), "{ip}");
        }
        let c = cfg(&[("SHMNET_PARTITIONS", "127.77.0.0/16")]).unwrap();
        assert!(c.is_partition_ip("127.77.3.4".parse().unwrap()));
        assert!(c.is_partition_ip("::ffff:127.77.3.4".parse().unwrap()));
        assert!(!c.is_partition_ip("127.0.0.1".parse().unwrap()));
        assert!(!c.is_partition_ip("::1".parse().unwrap()));
    }
}
