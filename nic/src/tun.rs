//! A TUN device (IFF_TUN | IFF_NO_PI: bare IP packets) and its setup with
//! the classic interface ioctls (address, netmask, MTU, up) on sockets made
//! in the device's namespace: no netlink crate and no `ip` binary needed.
//! The device is not persistent: it disappears when its last fd closes,
//! including when the daemon is killed.

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// TUNSETIFF: fail with EBUSY if the device exists (linux/if_tun.h; not
/// in the libc crate).
const IFF_TUN_EXCL: libc::c_int = 0x8000;

/// An open TUN device.
pub struct Tun {
    fd: OwnedFd,
    name: String,
}

fn last(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: ifreq is plain data (a name and a union of plain data); all
    // zeros is a valid value of it.
    let mut r: libc::ifreq = unsafe { core::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

fn socket(family: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last("socket"));
    }
    // SAFETY: fd is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// ioctl(fd, req, arg) with the error named after `what`.
///
/// # Safety
/// `arg` must be the argument type the kernel expects for `req`.
unsafe fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: *mut T, what: &str) -> io::Result<()> {
    // SAFETY: per the caller; fd is open.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) } < 0 {
        return Err(last(what));
    }
    Ok(())
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data.
    unsafe { core::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

impl Tun {
    /// Creates TUN device `name` in the calling thread's network namespace;
    /// with `offload`, every packet carries a virtio-net header and the
    /// device takes and gives TCP/UDP super-packets (TUNSETOFFLOAD).
    /// `multi_queue`: IFF_MULTI_QUEUE; each call with the same name then
    /// opens one more queue of the same device. `new`: the device must not
    /// exist yet (IFF_TUN_EXCL, atomic in the kernel): a second NIC with
    /// the same name and `--queues 2` joined the first one's multi-queue
    /// device (review s28 #5); it is now refused with why.
    pub fn create(name: &str, offload: bool, multi_queue: bool, new: bool) -> io::Result<Tun> {
        // SAFETY: open(2) of a constant path; the fd is owned at once.
        let fd = unsafe {
            libc::open(
                c"/dev/net/tun".as_ptr(),
                libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(last("/dev/net/tun"));
        }
        // SAFETY: a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut r = ifreq(name)?;
        let vnet = if offload { libc::IFF_VNET_HDR } else { 0 };
        let mq = if multi_queue {
            libc::IFF_MULTI_QUEUE
        } else {
            0
        };
        let excl = if new { IFF_TUN_EXCL } else { 0 };
        r.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | vnet | mq | excl) as libc::c_short;
        // SAFETY: TUNSETIFF takes a struct ifreq.
        let set = unsafe {
            ioctl(
                &fd,
                libc::TUNSETIFF as _,
                &mut r,
                &format!("TUNSETIFF {name}"),
            )
        };
        match set {
            Err(e) if new && e.kind() == io::ErrorKind::ResourceBusy => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "a device named {name} already exists here (another shmnet nic?): give another --name"
                    ),
                ))
            }
            r => r?,
        }
        if offload {
            let tcp = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
            // UDP segmentation too (Linux 6.2+) when the kernel has it.
            for f in [tcp | libc::TUN_F_USO4 | libc::TUN_F_USO6, tcp] {
                // SAFETY: TUNSETOFFLOAD takes its flags by value.
                let r = unsafe {
                    libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD as _, f as libc::c_ulong)
                };
                if r == 0 {
                    break;
                }
                if f == tcp {
                    return Err(last("TUNSETOFFLOAD"));
                }
            }
        }
        // SAFETY: the kernel wrote a NUL-terminated name into ifr_name.
        let name = unsafe { CStr::from_ptr(r.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(Tun { fd, name })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the MTU and addresses (IPv4: the first on the device, the
    /// others as labelled aliases `name:1`...; IPv6: any number), then
    /// brings the device up. Runs in the device's namespace.
    pub fn configure(&self, mtu: u32, addrs: &[(IpAddr, u8)]) -> io::Result<()> {
        let s4 = socket(libc::AF_INET)?;
        let mut r = ifreq(&self.name)?;
        r.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        // SAFETY: SIOCSIFMTU takes a struct ifreq.
        unsafe { ioctl(&s4, libc::SIOCSIFMTU, &mut r, "SIOCSIFMTU")? };
        let mut v4 = 0;
        for &(addr, prefix) in addrs {
            match addr {
                IpAddr::V4(a) => {
                    let label = match v4 {
                        0 => self.name.clone(),
                        k => format!("{}:{k}", self.name),
                    };
                    v4 += 1;
                    let mut r = ifreq(&label)?;
                    r.ifr_ifru.ifru_addr = sockaddr_in(a);
                    // SAFETY: SIOCSIFADDR takes a struct ifreq.
                    unsafe { ioctl(&s4, libc::SIOCSIFADDR, &mut r, "SIOCSIFADDR")? };
                    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                    r.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
                    // SAFETY: SIOCSIFNETMASK takes a struct ifreq.
                    unsafe { ioctl(&s4, libc::SIOCSIFNETMASK, &mut r, "SIOCSIFNETMASK")? };
                }
                IpAddr::V6(a) => {
                    let s6 = socket(libc::AF_INET6)?;
                    let mut r = ifreq(&self.name)?;
                    // SAFETY: SIOCGIFINDEX takes a struct ifreq.
                    unsafe { ioctl(&s6, libc::SIOCGIFINDEX, &mut r, "SIOCGIFINDEX")? };
                    let mut r6 = libc::in6_ifreq {
                        ifr6_addr: libc::in6_addr {
                            s6_addr: a.octets(),
                        },
                        ifr6_prefixlen: u32::from(prefix),
                        // SAFETY: SIOCGIFINDEX filled ifru_ifindex.
                        ifr6_ifindex: unsafe { r.ifr_ifru.ifru_ifindex },
                    };
                    // SAFETY: on an AF_INET6 socket SIOCSIFADDR takes a
                    // struct in6_ifreq.
                    unsafe { ioctl(&s6, libc::SIOCSIFADDR, &mut r6, "SIOCSIFADDR (IPv6)")? };
                }
            }
        }
        let mut r = ifreq(&self.name)?;
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS take a struct ifreq.
        unsafe { ioctl(&s4, libc::SIOCGIFFLAGS, &mut r, "SIOCGIFFLAGS")? };
        // SAFETY: SIOCGIFFLAGS filled ifru_flags.
        unsafe { r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        // SAFETY: as above.
        unsafe { ioctl(&s4, libc::SIOCSIFFLAGS, &mut r, "SIOCSIFFLAGS")? };
        Ok(())
    }

    /// Reads one packet into `cap` bytes at `buf` (non-blocking: WouldBlock
    /// when none is queued).
    ///
    /// # Safety
    /// `buf..buf+cap` must be writable memory no reference covers.
    pub unsafe fn read_raw(&self, buf: *mut u8, cap: usize) -> io::Result<usize> {
        // SAFETY: per the caller.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.cast(), cap) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes one packet (the kernel takes it whole or not at all).
    pub fn write(&self, p: &[u8]) -> io::Result<usize> {
        // SAFETY: p is a valid slice.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), p.as_ptr().cast(), p.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Waits up to `timeout_ms` for a packet to read: Some(true) if one is
    /// there, Some(false) if none came, None once the device is gone (its
    /// namespace's root deleted it: `ip link del`), which poll reports at
    /// once, for ever (review s28 #1: the send thread spun on it).
    pub fn wait_readable(&self, timeout_ms: i32) -> Option<bool> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return None;
        }
        Some(n > 0 && p.revents & libc::POLLIN != 0)
    }
}
