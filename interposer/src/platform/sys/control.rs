//! Control buffers (cmsgs) of datagram receives and sends: a kernel
//! receive that keeps the kernel's cmsgs, an emulated recvmsg that writes
//! its own, and the cmsgs a sendmsg passes.

use core::ffi::c_int;
use std::io::IoSliceMut;
use std::net::SocketAddr;

/// What a recvmsg with a control buffer got: the datagram's length, its
/// source, the control bytes the kernel wrote and its msg_flags.
pub(crate) struct Got {
    pub len: usize,
    pub from: Option<SocketAddr>,
    pub control_len: usize,
    pub flags: c_int,
}

/// recvmsg(2) on a socket of the library's own into `bufs`, with `control`
/// for the kernel's cmsgs (the caller's errno left alone).
pub(crate) fn recvmsg_control(
    sock: std::os::fd::BorrowedFd<'_>,
    bufs: &mut [IoSliceMut<'_>],
    control: &mut [u8],
    flags: c_int,
) -> Result<Got, c_int> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero sockaddr_storage and msghdr are valid values.
    let mut name: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    let mut m: libc::msghdr = unsafe { core::mem::zeroed() };
    m.msg_name = core::ptr::addr_of_mut!(name).cast();
    m.msg_namelen = core::mem::size_of_val(&name) as _;
    // (IoSliceMut is an iovec on Unix.)
    m.msg_iov = bufs.as_mut_ptr().cast();
    m.msg_iovlen = bufs.len() as _;
    if !control.is_empty() {
        m.msg_control = control.as_mut_ptr().cast();
        m.msg_controllen = control.len() as _;
    }
    let fd = sock.as_raw_fd();
    let mp = core::ptr::addr_of_mut!(m);
    // SAFETY: recvmsg(2) with a msghdr whose name, iovecs and control
    // buffer are ours and valid for their lengths for the call.
    let n = super::quietly(|| unsafe { libc::syscall(libc::SYS_recvmsg, fd, mp, flags) })?;
    let from = (m.msg_namelen > 0)
        .then(|| {
            // SAFETY: `name` is ours, `msg_namelen` bytes the kernel wrote
            // (at most its size).
            unsafe {
                super::socket_addr_trusted(
                    core::ptr::addr_of!(name).cast(),
                    m.msg_namelen.min(core::mem::size_of_val(&name) as _),
                )
            }
        })
        .flatten();
    Ok(Got {
        len: n as usize,
        from,
        #[allow(clippy::unnecessary_cast)] // size_t in glibc, socklen_t in musl
        control_len: if control.is_empty() {
            0
        } else {
            m.msg_controllen as usize
        },
        flags: m.msg_flags,
    })
}

/// `cmsgs` laid out in a control buffer (CMSG_SPACE apart), for a send
/// through the kernel that keeps them.
pub(crate) fn cmsg_bytes(cmsgs: &[Cmsg]) -> Vec<u8> {
    let hdr = core::mem::size_of::<libc::cmsghdr>();
    let word = core::mem::size_of::<usize>();
    let space = |n: usize| (hdr + n).div_ceil(word) * word;
    // (Sized once: a send with cmsgs pays one allocation.)
    let mut out = Vec::with_capacity(cmsgs.iter().map(|(_, _, d)| space(d.len())).sum());
    for (level, kind, data) in cmsgs {
        out.extend_from_slice(&(hdr + data.len()).to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(word) * word, 0);
    }
    out
}

/// sendmsg(2) of `bufs` to `dest` with the control buffer `control` on a
/// socket of the library's own (the caller's errno left alone).
pub(crate) fn sendmsg_control(
    sock: std::os::fd::BorrowedFd<'_>,
    bufs: &[std::io::IoSlice<'_>],
    dest: SocketAddr,
    control: &[u8],
) -> Result<usize, c_int> {
    use std::os::fd::AsRawFd;
    let (mut name, len) = super::encode_socket_addr(dest);
    // SAFETY: an all-zero msghdr is a valid value.
    let mut m: libc::msghdr = unsafe { core::mem::zeroed() };
    m.msg_name = core::ptr::addr_of_mut!(name).cast();
    m.msg_namelen = len as _;
    // (IoSlice is an iovec on Unix; the kernel only reads them.)
    m.msg_iov = bufs.as_ptr().cast_mut().cast();
    m.msg_iovlen = bufs.len() as _;
    m.msg_control = control.as_ptr().cast_mut().cast();
    m.msg_controllen = control.len() as _;
    let fd = sock.as_raw_fd();
    let mp = core::ptr::addr_of!(m);
    // SAFETY: sendmsg(2) with a msghdr whose name, iovecs and control
    // buffer are ours and valid for their lengths for the call (read only).
    let n =
        super::quietly(|| unsafe { libc::syscall(libc::SYS_sendmsg, fd, mp, libc::MSG_NOSIGNAL) })?;
    Ok(n as usize)
}

/// One cmsg a sendmsg passes: level, type, payload.
pub(crate) type Cmsg = (c_int, c_int, Vec<u8>);

/// The cmsgs of a sendmsg's control buffer, read within it (the kernel's
/// __cmsg_nxthdr rules); Err(EINVAL) for a malformed one, as the kernel.
///
/// # Safety
/// `msg` null or a valid msghdr whose control buffer, if not null, is
/// valid for reads of `msg_controllen` bytes (sendmsg(2)).
pub(crate) unsafe fn msg_cmsgs_in(msg: *const libc::msghdr) -> Result<Vec<Cmsg>, c_int> {
    if msg.is_null() {
        return Ok(Vec::new());
    }
    // SAFETY: caller contract.
    let m = unsafe { &*msg };
    #[allow(clippy::unnecessary_cast)] // size_t in glibc, socklen_t in musl
    let len = m.msg_controllen as usize;
    if m.msg_control.is_null() || len == 0 {
        return Ok(Vec::new());
    }
    let mut raw = vec![0u8; len];
    // SAFETY: the control buffer is readable for `len` bytes (contract);
    // `user_read` copies them checked (EFAULT for a bad pointer).
    unsafe { super::user_read(m.msg_control.cast::<u8>(), &mut raw) }?;
    parse(&raw)
}

/// The cmsgs in `raw`, as the kernel's `__sys_sendmsg` walks them.
pub(crate) fn parse(raw: &[u8]) -> Result<Vec<Cmsg>, c_int> {
    let mut out = Vec::new();
    walk_cmsgs(raw, |level, kind, data| {
        out.push((level, kind, data.to_vec()))
    })?;
    Ok(out)
}

/// Calls `f` with level, type and payload of each cmsg in `raw`, in order,
/// as the kernel's `__sys_sendmsg` walks them; EINVAL at the first whose
/// length does not fit (those before it were given to `f`).
pub(crate) fn walk_cmsgs(raw: &[u8], mut f: impl FnMut(c_int, c_int, &[u8])) -> Result<(), c_int> {
    let hdr = core::mem::size_of::<libc::cmsghdr>();
    let word = core::mem::size_of::<usize>();
    let mut at = 0usize;
    while raw.len() - at >= hdr {
        let mut l = [0u8; core::mem::size_of::<usize>()];
        l.copy_from_slice(&raw[at..at + word]);
        let clen = usize::from_ne_bytes(l);
        if clen < hdr || clen > raw.len() - at {
            return Err(libc::EINVAL);
        }
        let int = |o: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&raw[at + o..at + o + 4]);
            c_int::from_ne_bytes(b)
        };
        f(int(word), int(word + 4), &raw[at + hdr..at + clen]);
        at = at.saturating_add(clen.div_ceil(word) * word);
        if at >= raw.len() {
            break;
        }
    }
    Ok(())
}

/// The most control bytes an emulated recvmsg writes (its own cmsgs, or
/// the kernel's kept in `ancillary`'s 512 bytes): a larger buffer gets
/// the same bytes.
const CONTROL_ROOM: usize = 1024;

/// After an emulated datagram recvmsg with cmsgs: its control buffer
/// written by `fill` (given a buffer of the caller's room, it returns the
/// bytes written and whether it set MSG_CTRUNC), `msg_controllen` those
/// bytes. They are made in a buffer of ours and copied out checked: an
/// unwritable control buffer gets none (msg_controllen 0), as the
/// kernel's put_cmsg fails with EFAULT and recvmsg still returns the
/// datagram.
///
/// # Safety
/// `msg` a valid msghdr (recvmsg(2)); its control buffer is the caller's
/// to vouch for, as recvmsg(2) has it (a bad one is not a fault here).
pub(crate) unsafe fn msg_control_out(
    msg: *mut libc::msghdr,
    fill: impl FnOnce(&mut [u8]) -> (usize, bool),
) -> bool {
    // SAFETY: caller contract.
    let m = unsafe { &mut *msg };
    #[allow(clippy::unnecessary_cast)] // size_t in glibc, socklen_t in musl
    let room = if m.msg_control.is_null() {
        0
    } else {
        m.msg_controllen as usize
    };
    let mut local = [0u8; CONTROL_ROOM];
    let (n, cut) = fill(&mut local[..room.min(CONTROL_ROOM)]);
    let n = n.min(room.min(CONTROL_ROOM));
    // SAFETY: `local` is ours, valid for `n` bytes; the control buffer is
    // the caller's (recvmsg(2)'s contract), and `user_copy` checks it
    // (EFAULT for a bad one) as the kernel's copy does.
    let ok = unsafe { super::user_copy(local.as_ptr(), m.msg_control.cast::<u8>(), n) }.is_ok();
    m.msg_controllen = if ok { n as _ } else { 0 };
    cut
}

/// The fds of the SCM_RIGHTS cmsgs in `raw` (a control buffer the kernel
/// wrote), in order.
pub(crate) fn rights_in(raw: &[u8]) -> Vec<c_int> {
    let mut fds = Vec::new();
    let _ = walk_cmsgs(raw, |level, kind, data| {
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            fds.extend(
                data.chunks_exact(4)
                    .map(|c| c_int::from_ne_bytes([c[0], c[1], c[2], c[3]])),
            );
        }
    });
    fds
}

/// Lays the cmsgs of `raw` (what the kernel wrote into a control buffer
/// with room to spare) into `out` (as long as the caller's buffer), as the
/// kernel would have laid them there (`put_cmsg`, `scm_detach_fds`): the
/// fds `taken` says are the library's left out of SCM_RIGHTS, and where
/// `out` is too short cut as the kernel cuts, the fds left out given to
/// `close` (the kernel would not have installed them). Returns the bytes
/// written and whether anything was cut (MSG_CTRUNC).
pub(crate) fn refit_rights(
    raw: &[u8],
    out: &mut [u8],
    taken: impl Fn(c_int) -> bool,
    mut close: impl FnMut(c_int),
) -> (usize, bool) {
    let hdr = core::mem::size_of::<libc::cmsghdr>();
    let word = core::mem::size_of::<usize>();
    let space = |len: usize| hdr + len.div_ceil(word) * word;
    let mut at = 0usize;
    let mut cut = false;
    let put = |out: &mut [u8], at: usize, level: c_int, kind: c_int, data: &[u8]| {
        // The header, with cmsg_len as given.
        let room = out.len() - at;
        let mut cmlen = hdr + data.len();
        if room < cmlen {
            cmlen = room;
        }
        let mut h = [0u8; 16];
        h[..word].copy_from_slice(&cmlen.to_ne_bytes()[..word]);
        h[word..word + 4].copy_from_slice(&level.to_ne_bytes());
        h[word + 4..word + 8].copy_from_slice(&kind.to_ne_bytes());
        out[at..at + hdr].copy_from_slice(&h[..hdr]);
        out[at + hdr..at + cmlen].copy_from_slice(&data[..cmlen - hdr]);
        space(data.len()).min(room)
    };
    let _ = walk_cmsgs(raw, |level, kind, data| {
        let room = out.len().saturating_sub(at);
        if level == libc::SOL_SOCKET && kind == libc::SCM_RIGHTS {
            let fds: Vec<c_int> = data
                .chunks_exact(4)
                .map(|c| c_int::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .filter(|&f| !taken(f))
                .collect();
            let max = if room > hdr { (room - hdr) / 4 } else { 0 };
            let n = fds.len().min(max);
            for &f in &fds[n..] {
                close(f);
            }
            if n < fds.len() {
                cut = true;
            }
            if n > 0 {
                let bytes: Vec<u8> = fds[..n].iter().flat_map(|f| f.to_ne_bytes()).collect();
                at += put(out, at, level, kind, &bytes);
            }
            return;
        }
        if room < hdr {
            cut = true;
            return;
        }
        if room < hdr + data.len() {
            cut = true;
        }
        at += put(out, at, level, kind, data);
    });
    (at, cut)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sent_cmsgs_are_walked_as_the_kernel_walks_them() {
        let mut raw = vec![0u8; 0];
        let mut put = |level: i32, kind: i32, data: &[u8]| {
            let len = 16 + data.len();
            raw.extend_from_slice(&(len as u64).to_ne_bytes());
            raw.extend_from_slice(&level.to_ne_bytes());
            raw.extend_from_slice(&kind.to_ne_bytes());
            raw.extend_from_slice(data);
            raw.resize(raw.len().div_ceil(8) * 8, 0);
        };
        put(0, libc::IP_PKTINFO, &[1; 12]);
        put(0, libc::IP_TOS, &[4]);
        let got = super::parse(&raw).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].2, vec![1; 12]);
        assert_eq!(got[1], (0, libc::IP_TOS, vec![4]));
        let mut bad = raw.clone();
        bad[0] = 8;
        assert_eq!(super::parse(&bad), Err(libc::EINVAL));
    }

    /// The kernel's cut for a buffer with room for one fd: one laid, the
    /// rest closed, MSG_CTRUNC; the library's taken out first.
    #[test]
    fn refit_rights_cuts_as_the_kernel() {
        use super::{cmsg_bytes, refit_rights, rights_in};
        use core::ffi::c_int;
        let fds: Vec<u8> = [3, 4, 5]
            .iter()
            .flat_map(|f: &c_int| f.to_ne_bytes())
            .collect();
        let raw = cmsg_bytes(&[(libc::SOL_SOCKET, libc::SCM_RIGHTS, fds)]);
        let hdr = core::mem::size_of::<libc::cmsghdr>();
        let mut out = vec![0u8; hdr + 4];
        let mut closed = Vec::new();
        let (n, cut) = refit_rights(&raw, &mut out, |_| false, |f| closed.push(f));
        assert_eq!((n, cut, closed.clone()), (hdr + 4, true, vec![4, 5]));
        assert_eq!(rights_in(&out[..n]), vec![3]);
        closed.clear();
        let (n, cut) = refit_rights(&raw, &mut out, |f| f != 3, |f| closed.push(f));
        assert_eq!((n, cut, closed), (hdr + 4, false, vec![]));
        assert_eq!(rights_in(&out[..n]), vec![3]);
        // Room for all: the same bytes, nothing cut.
        let mut big = vec![0u8; 256];
        let (n, cut) = refit_rights(&raw, &mut big, |_| false, |_| {});
        assert_eq!((&big[..n], cut), (&raw[..], false));
    }
}
