//! SHMNET_DIR as the library works it out (docs/configuration.md), and its
//! safety as the library judges it (interposer/src/platform/safedir.rs).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `--dir`, else SHMNET_DIR, else `$XDG_RUNTIME_DIR/shmnet` when that
/// directory is absolute and belongs to the effective uid, else
/// `/tmp/shmnet-<euid>`.
pub(crate) fn resolve(given: Option<&Path>) -> PathBuf {
    if let Some(d) = given {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("SHMNET_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let euid = euid();
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if run.is_absolute() && std::fs::metadata(&run).is_ok_and(|m| m.is_dir() && m.uid() == euid)
        {
            return run.join("shmnet");
        }
    }
    PathBuf::from(format!("/tmp/shmnet-{euid}"))
}

/// What the library would say of the directory: Ok with a description
/// when it is safe (or missing with its parent there: the first preloaded
/// program creates it mode 0700), Err with what to fix.
pub(crate) fn verdict(path: &Path) -> Result<String, String> {
    let p = path.display();
    if !path.is_absolute() {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        return Err(format!(
            "{p} is not an absolute path: the library refuses it and passes all sockets \
             through; give an absolute one (e.g. {}; `shmnet run --dir` makes it absolute)",
            abs.display()
        ));
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            return if !parent.is_dir() {
                Err(format!(
                    "{p} cannot be created: its parent {} is missing; create it or set SHMNET_DIR",
                    parent.display()
                ))
            } else if !may_write(parent) {
                Err(format!(
                    "{p} cannot be created: its parent {} is not writable by you (uid {}); \
                     create {p} (mode 0700, yours) or set SHMNET_DIR",
                    parent.display(),
                    euid()
                ))
            } else {
                Ok(format!("{p} does not exist yet: the first preloaded program that needs it creates it (mode 0700)"))
            };
        }
        Err(e) => {
            return Err(format!(
                "{p} cannot be looked at ({e}): fix it or set SHMNET_DIR"
            ))
        }
    };
    if meta.file_type().is_symlink() {
        return Err(format!("{p} is a symlink: remove it or set SHMNET_DIR"));
    }
    if !meta.is_dir() {
        return Err(format!(
            "{p} is not a directory: remove it or set SHMNET_DIR"
        ));
    }
    let euid = euid();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(format!(
            "{p} is owned by uid {}, not by you (uid {euid}) or root: remove it or set SHMNET_DIR",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(format!(
            "{p} is writable by others and not sticky (mode {mode:04o}): chmod 0700 (or +t) it"
        ));
    }
    if !may_write(path) {
        return Err(format!(
            "{p} is not writable by you (uid {euid}): programs could make nothing there; chown it or set SHMNET_DIR"
        ));
    }
    Ok(format!("{p}: owner uid {}, mode {mode:04o}", meta.uid()))
}

/// Whether the effective uid may create entries in directory `path`
/// (`eaccess`: the effective ids, as the library's creates use).
fn may_write(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path; faccessat has no other preconditions.
    unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        ) == 0
    }
}
