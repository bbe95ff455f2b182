//! Network namespaces named as `ip netns` does (a name under /run/netns),
//! as a path (/proc/PID/ns/net), or the current one; entered from a
//! short-lived thread (setns(CLONE_NEWNET) changes only the calling thread).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// How the command line named a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsSpec {
    /// The namespace shmnet runs in.
    Current,
    /// An `ip netns` name: /run/netns/NAME.
    Named(String),
    /// A namespace file, such as /proc/PID/ns/net.
    Path(PathBuf),
}

impl NsSpec {
    /// `current` (or `.`), a path (contains '/'), or an `ip netns` name.
    ///
    /// ```
    /// use shmnet_nic::netns::NsSpec;
    ///
    /// assert_eq!(NsSpec::parse("current").unwrap(), NsSpec::Current);
    /// assert_eq!(NsSpec::parse("a").unwrap(), NsSpec::Named("a".into()));
    /// assert!(matches!(NsSpec::parse("/proc/1/ns/net").unwrap(), NsSpec::Path(_)));
    /// assert!(NsSpec::parse("..").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<NsSpec, String> {
        match s {
            "current" | "." => Ok(NsSpec::Current),
            "" | ".." => Err(format!("{s:?} is not a namespace name")),
            _ if s.contains('/') => Ok(NsSpec::Path(PathBuf::from(s))),
            _ => Ok(NsSpec::Named(s.to_string())),
        }
    }

    /// The file that names it (None: the current namespace).
    pub(crate) fn path(&self) -> Option<PathBuf> {
        match self {
            NsSpec::Current => None,
            NsSpec::Named(n) => Some(PathBuf::from("/run/netns").join(n)),
            NsSpec::Path(p) => Some(p.clone()),
        }
    }
}

impl std::fmt::Display for NsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NsSpec::Current => f.write_str("current"),
            NsSpec::Named(n) => f.write_str(n),
            NsSpec::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An opened namespace: its file (keeps it alive while we hold it) and
/// identity (device, inode), to notice when its name goes away.
pub struct Netns {
    spec: NsSpec,
    file: Option<File>,
    id: (u64, u64),
}

impl Netns {
    /// Opens the namespace `spec` names; fails if it is not one.
    pub fn open(spec: &NsSpec) -> io::Result<Netns> {
        let Some(path) = spec.path() else {
            let m = std::fs::metadata("/proc/self/ns/net")?;
            return Ok(Netns {
                spec: spec.clone(),
                file: None,
                id: (m.dev(), m.ino()),
            });
        };
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let m = file.metadata()?;
        Ok(Netns {
            spec: spec.clone(),
            file: Some(file),
            id: (m.dev(), m.ino()),
        })
    }

    /// How it was named.
    pub fn spec(&self) -> &NsSpec {
        &self.spec
    }

    /// Its (device, inode) when opened.
    pub fn id(&self) -> (u64, u64) {
        self.id
    }

    /// Closes our file of it, so that a namespace that went away can be
    /// freed (review s28 #6: the daemon kept deleted namespaces alive).
    /// It cannot be entered any more.
    pub fn release(&mut self) {
        self.file = None;
    }

    /// Whether the name still leads to the same namespace (false once
    /// `ip netns delete` removed it or the process of /proc/PID exited).
    pub fn alive(&self) -> bool {
        match self.spec.path() {
            None => true,
            Some(p) => std::fs::metadata(p).is_ok_and(|m| (m.dev(), m.ino()) == self.id),
        }
    }

    /// Runs `f` on a thread inside the namespace (the current one: on a
    /// thread too, for the same behaviour).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        if self.file.is_none() && self.spec.path().is_some() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("namespace {} was released", self.spec),
            ));
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Some(file) = &self.file {
                    // SAFETY: setns on a namespace fd we own; it changes only
                    // this thread's network namespace, and the thread ends
                    // with the scope.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        let e = io::Error::last_os_error();
                        return Err(io::Error::new(
                            e.kind(),
                            format!("setns({}): {e}", self.spec),
                        ));
                    }
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
        })
    }
}
