//! An exec call's arguments, read for `calls::plain_exec`: the program's
//! path and the environment the new image gets; and this library's own
//! file name.
#![allow(unsafe_code)]

use core::ffi::{c_char, c_void, CStr};

extern "C" {
    /// The process's environment (execv, execvp and execl use it).
    static environ: *const *const c_char;
}

/// The bytes of a C string from the caller (None for a null pointer).
///
/// # Safety
/// `s` must be null or a NUL-terminated string, as exec(3) requires of
/// its path argument.
pub(crate) unsafe fn c_bytes(s: *const c_char) -> Option<Vec<u8>> {
    if s.is_null() {
        return None;
    }
    // SAFETY: the caller's contract.
    Some(unsafe { CStr::from_ptr(s) }.to_bytes().to_vec())
}

/// The value of `name` in the environment `envp` (None: the process's own
/// `environ`), as the dynamic loader reads it: the last entry wins. The
/// outer None says the variable is absent.
///
/// # Safety
/// `envp` must be null or a NULL-terminated array of NUL-terminated
/// strings, as execve(2) requires of its caller.
pub(crate) unsafe fn env_value(envp: Option<*const *const c_char>, name: &[u8]) -> Option<Vec<u8>> {
    let mut p = match envp {
        Some(e) => e,
        // SAFETY: reading the global `environ` pointer; exec is about to
        // replace the image, and the program's contract is not to change
        // it meanwhile.
        None => unsafe { environ },
    };
    let mut found = None;
    if p.is_null() {
        return None; // Linux takes a NULL envp for an empty environment.
    }
    loop {
        // SAFETY: `p` points into the NULL-terminated array (caller's contract).
        let entry = unsafe { *p };
        if entry.is_null() {
            return found;
        }
        // SAFETY: each entry is a NUL-terminated string (caller's contract).
        let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes();
        if let Some(value) = bytes
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(b"="))
        {
            found = Some(value.to_vec());
        }
        // SAFETY: not past the terminating NULL, which was not reached yet.
        p = unsafe { p.add(1) };
    }
}

/// This library's file name, as the loader opened it (dladdr).
pub(crate) fn own_library() -> Option<Vec<u8>> {
    let mut info: libc::Dl_info = libc::Dl_info {
        dli_fname: core::ptr::null(),
        dli_fbase: core::ptr::null_mut(),
        dli_sname: core::ptr::null(),
        dli_saddr: core::ptr::null_mut(),
    };
    let here = own_library as *const c_void;
    // SAFETY: dladdr reads the loader's tables for an address of ours and
    // fills `info`, a valid, writable Dl_info.
    if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is the loader's NUL-terminated name of the object,
    // alive while the library is loaded.
    Some(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_bytes()
            .to_vec(),
    )
}
