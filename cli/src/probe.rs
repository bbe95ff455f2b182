//! `shmnet __probe`: runs with the library preloaded (started by `shmnet
//! check`): says which library version answers, and with `--pair` connects
//! and says how the connect went, from the library's own counters. Its
//! stdout is one JSON line.

use std::ffi::CStr;
use std::net::ToSocketAddrs;
use std::time::Instant;

use crate::cli::ProbeArgs;

type VersionFn = unsafe extern "C" fn() -> *const libc::c_char;
type CountersFn = unsafe extern "C" fn(*mut u64, usize) -> usize;

fn symbol(name: &CStr) -> *mut libc::c_void {
    // SAFETY: dlsym with the default handle and a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

fn counters() -> Option<[u64; 10]> {
    let f = symbol(c"shmnet_counters");
    if f.is_null() {
        return None;
    }
    // SAFETY: the library exports shmnet_counters with this signature.
    let f: CountersFn = unsafe { std::mem::transmute::<*mut libc::c_void, CountersFn>(f) };
    let mut out = [0u64; 10];
    // SAFETY: `out` holds 10 writable u64s.
    unsafe { f(out.as_mut_ptr(), out.len()) };
    Some(out)
}

pub(crate) fn main(a: ProbeArgs) -> i32 {
    let v = symbol(c"shmnet_version");
    let version = if v.is_null() {
        None
    } else {
        // SAFETY: the library exports shmnet_version with this signature;
        // it returns a static NUL-terminated string.
        let f: VersionFn = unsafe { std::mem::transmute::<*mut libc::c_void, VersionFn>(v) };
        // SAFETY: as above.
        Some(
            unsafe { CStr::from_ptr(f()) }
                .to_string_lossy()
                .into_owned(),
        )
    };
    let mut doc = serde_json::json!({ "loaded": version.is_some(), "version": version });
    if let Some(pair) = a.pair {
        let before = counters();
        let t0 = Instant::now();
        let addr = pair.to_socket_addrs().ok().and_then(|mut a| a.next());
        let result = match addr {
            None => Err(format!("{pair} is not HOST:PORT")),
            Some(addr) => {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(5))
                    .map_err(|e| e.to_string())
            }
        };
        let took = t0.elapsed();
        let after = counters();
        let delta: Option<Vec<u64>> = before
            .zip(after)
            .map(|(b, a)| a.iter().zip(b).map(|(a, b)| a.saturating_sub(b)).collect());
        doc["connect"] = match &result {
            Ok(_) => serde_json::json!("ok"),
            Err(e) => serde_json::json!(e),
        };
        doc["connect_us"] = serde_json::json!(took.as_micros() as u64);
        doc["counters"] = serde_json::json!(delta);
        drop(result);
    }
    println!("{doc}");
    0
}
