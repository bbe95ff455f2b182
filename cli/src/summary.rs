//! `shmnet ss -s`: one summary, printed for people or as JSON with the
//! same facts under the names docs/status.md ("shmnet ss -s") gives: the
//! listed sockets by state, the sockets not listed, and the connection
//! counters (docs/counters.md) of every process since the counters file
//! was made and of each live process since it started.

use std::path::Path;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::json;

use crate::stats::{
    self, Counts, FALLBACKS, MEANINGS, NAMES, NO_GATEWAY, UDP_DROPPED, UDP_KERNEL, UDP_SHM,
};
use crate::units;

pub(crate) const STATES: [&str; 4] = ["listening", "established", "half-closed", "closed-by-peer"];

/// Counts serialized as an object, in the file's order.
struct Named<'a>(&'a Counts);

impl Serialize for Named<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(NAMES.len()))?;
        for (k, v) in NAMES.iter().zip(self.0) {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// What `ss -s` shows.
pub(crate) struct Summary<'a> {
    pub(crate) dir: &'a Path,
    /// Processes listed with sockets.
    pub(crate) processes: usize,
    /// Listed sockets per state, in `STATES` order.
    pub(crate) states: [usize; 4],
    /// Sockets that found their process's status file full, since the
    /// files read were made (the files do not say how many of those are
    /// still open).
    pub(crate) not_listed: u64,
    /// Files not taken (whole or in part), and why.
    pub(crate) skipped: &'a [crate::status::Skipped],
    /// `-p`: the counters of that process only.
    pub(crate) only: Option<u32>,
}

/// Connects that went to kernel TCP: the fallbacks, and those to a
/// remote range with no gateway (kernel TCP in the default mode; see
/// `no_gateway`).
fn fallbacks(c: &Counts) -> u64 {
    c[FALLBACKS]
        .iter()
        .chain([&c[NO_GATEWAY]])
        .fold(0, |a, &v| a.saturating_add(v))
}

/// " (counting N ...)" when a connect to a remote range found no gateway
/// (the counter does not say which mode: the emulated one refuses them).
fn no_gateway(c: &Counts) -> String {
    match c[NO_GATEWAY] {
        0 => String::new(),
        n => format!(
            " (counting {n} to a remote range with no gateway, which the emulated mode refuses instead)"
        ),
    }
}

pub(crate) fn print(s: &Summary, json: bool) {
    let counters = stats::read_all(s.dir);
    let live: Vec<(u32, Counts)> = counters
        .live
        .iter()
        .filter(|(pid, _)| s.only.is_none_or(|p| p == **pid))
        .map(|(p, c)| (*p, *c))
        .collect();
    let mut live_sum = Counts::default();
    for (_, c) in &live {
        stats::add(&mut live_sum, c);
    }
    let commands: Vec<String> = live
        .iter()
        .map(|(pid, _)| crate::status::command(*pid, 40))
        .collect();
    if json {
        let doc = json!({
            "dir": s.dir,
            "processes": s.processes,
            "states": STATES.iter().zip(s.states).map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "not_listed": s.not_listed,
            "skipped": s.skipped,
            "counters": (counters.files > 0).then(|| json!({
                "files": counters.files,
                "since_made": Named(&counters.totals),
                "live": Named(&live_sum),
                "by_process": live.iter().zip(&commands).map(|((pid, c), cmd)| json!({
                    "pid": pid, "command": cmd, "counters": Named(c),
                })).collect::<Vec<_>>(),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return;
    }
    println!(
        "directory {}: {} processes with emulated sockets",
        s.dir.display(),
        s.processes
    );
    let mut rows: Vec<Vec<String>> = STATES
        .iter()
        .zip(s.states)
        .map(|(k, v)| vec![k.to_string(), v.to_string(), String::new()])
        .collect();
    rows.push(vec![
        "not listed".into(),
        s.not_listed.to_string(),
        "status files full: a count since they were made, closed ones included".into(),
    ]);
    if !s.skipped.is_empty() {
        rows.push(vec![
            "files skipped".into(),
            s.skipped.len().to_string(),
            "said above (on stderr)".into(),
        ]);
    }
    print!(
        "{}",
        units::table(&["SOCKETS", "COUNT", ""], &rows, &[false, true, false])
    );
    println!();
    if counters.files == 0 {
        println!("no counters file (stats-<uid>) in {}", s.dir.display());
        return;
    }
    let t = &counters.totals;
    println!(
        "connects since the counters file was made: {} over shared memory, {} over kernel TCP{}",
        t[0],
        fallbacks(t),
        no_gateway(t)
    );
    println!(
        "by the {} live processes since they started: {} over shared memory, {} over kernel TCP{}",
        live.len(),
        live_sum[0],
        fallbacks(&live_sum),
        no_gateway(&live_sum)
    );
    if t[UDP_SHM] | t[UDP_KERNEL] | t[UDP_DROPPED] != 0 {
        println!(
            "UDP datagrams since the counters file was made: {} over shared memory, {} over the kernel, {} dropped (receiver full)",
            t[UDP_SHM], t[UDP_KERNEL], t[UDP_DROPPED]
        );
    }
    let rows: Vec<Vec<String>> = (0..NAMES.len())
        .map(|i| {
            vec![
                NAMES[i].to_owned(),
                t[i].to_string(),
                live_sum[i].to_string(),
                MEANINGS[i].to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        units::table(
            &["COUNTER", "SINCE MADE", "LIVE", "MEANING"],
            &rows,
            &[false, true, true, false]
        )
    );
    if live.is_empty() {
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = live
        .iter()
        .zip(&commands)
        .map(|((pid, c), cmd)| {
            let counts: Vec<String> = NAMES
                .iter()
                .zip(c)
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let counts = if counts.is_empty() {
                "-".to_owned()
            } else {
                counts.join(", ")
            };
            vec![pid.to_string(), cmd.clone(), counts]
        })
        .collect();
    print!(
        "{}",
        units::table(
            &["PID", "COMMAND", "COUNTERS SINCE IT STARTED (others 0)"],
            &rows,
            &[true, false, false]
        )
    );
}
