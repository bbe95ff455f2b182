//! Who may meet whom over shared memory (docs/security.md, "Who may meet
//! whom"): each side admits a peer of its own effective uid, root, or one
//! its `SHMNET_ALLOW` names. Credentials come from the kernel
//! (`SO_PEERCRED`, `SO_PEERGROUPS`), never from the peer's word.
#![deny(unsafe_code)]

use std::os::fd::BorrowedFd;

/// `SHMNET_ALLOW`: peers admitted besides the same uid and root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allow {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
    /// `*`: anyone.
    pub any: bool,
}

/// A peer process as the kernel describes it: its pid (0 when it is not
/// visible from our pid namespace), effective uid and gid, and
/// supplementary groups, as they were when it connected or listened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of the other end of a connected Unix socket: the
    /// connector's for an accepted socket, the listener's (as of its
    /// listen()) for a connecting one. Its supplementary groups only when
    /// `allow` has group entries (a system call saved otherwise).
    pub(crate) fn of(sock: BorrowedFd<'_>, allow: &Allow) -> Option<Peer> {
        let (pid, uid, gid) = crate::platform::sys::peer_cred(sock)?;
        let groups = if allow.gids.is_empty() {
            Vec::new()
        } else {
            peer_groups(sock)
        };
        Some(Peer {
            pid,
            uid,
            gid,
            groups,
        })
    }
}

/// SO_PEERGROUPS (Linux 4.13): the peer's supplementary groups; empty when
/// the kernel cannot say.
fn peer_groups(sock: BorrowedFd<'_>) -> Vec<u32> {
    let mut buf = [0u32; 64];
    match crate::platform::sys::peer_groups(sock, &mut buf) {
        Some(n) => buf[..n].to_vec(),
        None => Vec::new(),
    }
}

impl Allow {
    /// Parses `SHMNET_ALLOW`: comma-separated user names or uids, `@group`
    /// names or `@gid`s, or `*`. Names are looked up in /etc/passwd and
    /// /etc/group (no NSS inside a hooked call; numbers always work).
    pub fn parse(list: &str) -> Result<Allow, String> {
        Self::parse_with(
            list,
            |n| lookup_id("/etc/passwd", n),
            |n| lookup_id("/etc/group", n),
        )
    }

    pub(crate) fn parse_with(
        list: &str,
        user: impl Fn(&str) -> Option<u32>,
        group: impl Fn(&str) -> Option<u32>,
    ) -> Result<Allow, String> {
        let mut allow = Allow::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                allow.any = true;
            } else if let Some(g) = item.strip_prefix('@') {
                let gid = match g.parse::<u32>() {
                    Ok(gid) => gid,
                    Err(_) => group(g).ok_or_else(|| format!("no group {g:?} in /etc/group"))?,
                };
                allow.gids.push(gid);
            } else {
                let uid = match item.parse::<u32>() {
                    Ok(uid) => uid,
                    Err(_) => {
                        user(item).ok_or_else(|| format!("no user {item:?} in /etc/passwd"))?
                    }
                };
                allow.uids.push(uid);
            }
        }
        Ok(allow)
    }

    /// Whether a side running as `me` admits `peer`.
    pub(crate) fn admits(&self, me: u32, peer: &Peer) -> bool {
        self.admits_uid(me, peer.uid)
            || self
                .gids
                .iter()
                .any(|g| *g == peer.gid || peer.groups.contains(g))
    }

    /// As `admits`, knowing only the peer's uid (a group entry may still
    /// admit it once its groups are known).
    pub(crate) fn admits_uid(&self, me: u32, uid: u32) -> bool {
        uid == me || uid == 0 || self.any || self.uids.contains(&uid)
    }

    /// The hint names a listener binds for this policy (see docs/security.md):
    /// `u<uid>`, `g<gid>`, `any`.
    pub(crate) fn hints(&self) -> Vec<String> {
        let mut h: Vec<String> = self.uids.iter().map(|u| format!("u{u}")).collect();
        h.extend(self.gids.iter().map(|g| format!("g{g}")));
        if self.any {
            h.push("any".into());
        }
        h
    }
}

/// The hints that would admit a connector running as `uid` with primary
/// group `gid` and supplementary `groups`, in the order to look for them.
pub(crate) fn hints_for(uid: u32, gid: u32, groups: &[u32]) -> Vec<String> {
    let mut h = vec![format!("u{uid}"), format!("g{gid}")];
    h.extend(
        groups
            .iter()
            .filter(|g| **g != gid)
            .map(|g| format!("g{g}")),
    );
    h.push("any".into());
    h
}

/// The id of `name` in a passwd/group-format file (third field).
fn lookup_id(file: &str, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Allow, String> {
        Allow::parse_with(
            s,
            |n| (n == "mysql").then_some(27),
            |n| (n == "www-data").then_some(33),
        )
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            pid: 1,
            uid,
            gid,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn parses_users_groups_and_any() {
        let a = parse(" mysql, 1000 ,@www-data,@50,").unwrap();
        assert_eq!(a.uids, vec![27, 1000]);
        assert_eq!(a.gids, vec![33, 50]);
        assert!(!a.any);
        assert!(parse("*").unwrap().any);
        assert_eq!(parse("").unwrap(), Allow::default());
        assert!(parse("nosuchuser").unwrap_err().contains("nosuchuser"));
        assert!(parse("@nosuchgroup").unwrap_err().contains("nosuchgroup"));
    }

    #[test]
    fn same_uid_and_root_by_default() {
        let a = Allow::default();
        assert!(a.admits(1000, &peer(1000, 1000, &[])));
        assert!(a.admits(1000, &peer(0, 0, &[])));
        assert!(!a.admits(1000, &peer(1001, 1001, &[])));
        assert!(!a.admits(0, &peer(1001, 1001, &[])));
    }

    #[test]
    fn allowed_users_and_groups() {
        let a = parse("mysql,@www-data").unwrap();
        assert!(a.admits(1000, &peer(27, 27, &[])));
        assert!(a.admits(1000, &peer(1001, 33, &[])));
        assert!(a.admits(1000, &peer(1001, 1001, &[4, 33])));
        assert!(!a.admits(1000, &peer(1001, 1001, &[4])));
        assert!(parse("*").unwrap().admits(0, &peer(5, 5, &[])));
        assert_eq!(a.hints(), vec!["u27", "g33"]);
        assert_eq!(
            hints_for(1001, 100, &[100, 33]),
            vec!["u1001", "g100", "g33", "any"]
        );
    }
}
