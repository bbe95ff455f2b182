//! STUB (the real module lands from main).
#![allow(dead_code)]
#![deny(unsafe_code)]
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
#[derive(Debug)]
pub(crate) struct Dir {
    path: PathBuf,
}
pub(crate) fn get() -> Result<Arc<Dir>, Errno> {
    let path = crate::config::get().ok_or(Errno::ACCESS)?.dir_path();
    let _ = std::fs::create_dir_all(&path);
    Ok(Arc::new(Dir { path }))
}
impl Dir {
    pub(crate) fn socket_path(&self, name: &str) -> Result<PathBuf, Errno> {
        Ok(self.path.join(name))
    }
    pub(crate) fn open(&self, name: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        rustix::fs::open(
            self.path.join(name),
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode,
        )
    }
    pub(crate) fn unlink(&self, name: &str) -> Result<(), Errno> {
        rustix::fs::unlink(self.path.join(name))
    }
    pub(crate) fn stat(&self, name: &str) -> Result<rustix::fs::Stat, Errno> {
        rustix::fs::lstat(self.path.join(name))
    }
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
