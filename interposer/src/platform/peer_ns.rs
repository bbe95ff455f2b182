//! What the listener can prove of a connector beyond its credentials: that
//! it is in our network namespace (`/proc/<pid>/ns/net` is ours), and that
//! it holds CAP_NET_ADMIN (capget(2) on its pid), the capability the kernel
//! asks of a socket that sends from an address not its own
//! (IP_TRANSPARENT, IP_FREEBIND's non-local binds are the kernel's, not
//! ours). The pid is SO_PEERCRED's, as of the connect: a connector that
//! exits during the handshake leaves its pid to be reused, and another
//! process would be looked at then (the connector must be uid 0 for this
//! to matter, and its pid must be taken over in the few milliseconds of
//! a handshake). A look that fails proves nothing.
#![forbid(unsafe_code)]

/// The inode and device of a namespace link, as stat(2) gives them.
fn ns_id(path: &str) -> Option<(u64, u64)> {
    #[allow(clippy::unnecessary_cast)] // st_dev/st_ino differ between architectures
    rustix::fs::stat(path)
        .ok()
        .map(|st| (st.st_dev as u64, st.st_ino as u64))
}

/// Whether process `pid` (0: not visible from our pid namespace) is in
/// this process's network namespace. Needs the right to look at its
/// namespaces (the same uid, or ours being privileged): otherwise false.
pub(crate) fn shares_netns(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let theirs = ns_id(&format!("/proc/{pid}/ns/net"));
    theirs.is_some() && theirs == ns_id("/proc/self/ns/net")
}

/// Whether process `pid` has CAP_NET_ADMIN in its effective set (relative
/// to its own user namespace: the caller also checks that it is uid 0 in
/// ours, which a user namespace's root is only if root made it). One
/// capget(2): reading `/proc/<pid>/status` instead (open, read, close, and
/// the kernel formatting the whole file) was 3.7% of a gateway's CPU under
/// short connections.
pub(crate) fn net_admin(pid: u32) -> bool {
    use rustix::thread::{capabilities, CapabilitySet};
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    capabilities(Some(pid)).is_ok_and(|c| c.effective.contains(CapabilitySet::NET_ADMIN))
}

/// The effective uid process `pid` has now (`/proc/<pid>/status`, the
/// second number of `Uid:`), which its SO_PEERCRED, taken at its listen,
/// may no longer be: a daemon binds as root and drops to its own user.
/// (`/proc/<pid>`'s owner is root for a process made non-dumpable by that
/// setuid.) None if it cannot be read.
pub(crate) fn effective_uid(pid: u32) -> Option<u32> {
    if pid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|e| e.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_shares_its_own_namespace() {
        assert!(shares_netns(std::process::id()));
        assert!(!shares_netns(0));
        assert!(!net_admin(0));
        assert_eq!(
            effective_uid(std::process::id()),
            Some(rustix::process::geteuid().as_raw())
        );
        assert_eq!(effective_uid(0), None);
        // capget agrees with CapEff in /proc/self/status (bit 12).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap();
        assert_eq!(net_admin(std::process::id()), eff & (1 << 12) != 0);
    }
}
