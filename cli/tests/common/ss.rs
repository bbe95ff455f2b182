//! `shmnet ss --json` in a test, and picking its entries.

use std::path::Path;

use serde_json::Value;

/// `shmnet ss --json --dir DIR EXTRA...`, which must succeed.
pub fn ss(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["ss", "--json", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = super::cli(&args, &[]);
    assert!(
        out.status.success(),
        "ss failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ss --json is JSON")
}

pub fn sockets(v: &Value) -> Vec<Value> {
    v["sockets"].as_array().cloned().unwrap_or_default()
}

pub fn of_pid(v: &Value, pid: u32) -> Vec<Value> {
    sockets(v).into_iter().filter(|s| s["pid"] == pid).collect()
}

/// The listeners `pid` is listed with.
pub fn listening(v: &Value, pid: u32) -> Vec<Value> {
    of_pid(v, pid)
        .into_iter()
        .filter(|s| s["state"] == "listening")
        .collect()
}

/// The connections `pid` is listed with.
pub fn connections(v: &Value, pid: u32) -> Vec<Value> {
    of_pid(v, pid)
        .into_iter()
        .filter(|s| s["state"] != "listening")
        .collect()
}

/// The port of an address as `ss` prints it ("127.0.0.1:4242").
pub fn port(addr: &Value) -> u16 {
    let a = addr
        .as_str()
        .unwrap_or_else(|| panic!("no address: {addr}"));
    a.rsplit(':').next().unwrap().parse().unwrap()
}
