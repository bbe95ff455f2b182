//! What `--status-file` shows, per peer link: its state, how many times it
//! was established, streams open and carried, bytes each way, resets; and
//! the gateway's pid, whether it runs or stopped, and when the file was
//! written (a gateway killed, SIGKILL, leaves "running" with its pid gone).
//! The file is JSON, rewritten every second (written aside, then renamed:
//! a reader never sees half of it), and once more as it stops.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::log;

#[derive(Default)]
pub struct Peer {
    pub name: String,
    /// "dialed" (this gateway dials it: --remote) or "accepted".
    pub role: &'static str,
    pub up: AtomicBool,
    pub established: AtomicU64,
    pub open: AtomicU64,
    /// Local connections waiting for their CONNECT's answer.
    pub opening: AtomicU64,
    pub streams: AtomicU64,
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub resets: AtomicU64,
}

impl Peer {
    pub fn stream_opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.streams.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stream_closed(&self, reset: bool) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if reset {
            self.resets.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn json(&self) -> String {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "{{\"peer\":\"{}\",\"role\":\"{}\",\"state\":\"{}\",\"links_established\":{},\
             \"streams_open\":{},\"streams_total\":{},\"bytes_sent\":{},\"bytes_received\":{},\
             \"resets\":{}}}",
            self.name,
            self.role,
            if self.up.load(Ordering::Relaxed) {
                "up"
            } else {
                "down"
            },
            n(&self.established),
            n(&self.open),
            n(&self.streams),
            n(&self.sent),
            n(&self.received),
            n(&self.resets),
        )
    }
}

/// Every peer this gateway knows now.
#[derive(Default, Clone)]
pub struct Board(Arc<Mutex<Vec<Arc<Peer>>>>);

impl Board {
    pub fn add(&self, name: String, role: &'static str) -> Arc<Peer> {
        let peer = Arc::new(Peer {
            name,
            role,
            ..Peer::default()
        });
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(peer.clone());
        peer
    }

    pub fn remove(&self, peer: &Arc<Peer>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| !Arc::ptr_eq(p, peer));
    }

    /// Streams open on every link, and whether a peer's connection to us
    /// is still there (a stopping gateway waits for both to be none).
    pub fn busy(&self) -> (u64, usize) {
        let peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let open = peers
            .iter()
            .map(|p| p.open.load(Ordering::SeqCst) + p.opening.load(Ordering::SeqCst))
            .sum();
        let accepted = peers.iter().filter(|p| p.role == "accepted").count();
        (open, accepted)
    }

    /// `gateway`: "running" or "stopped".
    fn json(&self, gateway: &str) -> String {
        let peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list: Vec<String> = peers.iter().map(|p| p.json()).collect();
        let updated = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!(
            "{{\"gateway\":\"{gateway}\",\"pid\":{},\"updated\":{updated},\"links\":[{}]}}\n",
            std::process::id(),
            list.join(",")
        )
    }

    /// The last state, written as the gateway stops: every link down.
    pub fn publish_stopped(&self, path: &std::path::Path) {
        for p in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            p.up.store(false, Ordering::Relaxed);
        }
        let tmp = path.with_extension("tmp");
        let r =
            std::fs::write(&tmp, self.json("stopped")).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            log!("--status-file {}: {e}", path.display());
        }
    }

    /// Rewrites `path` every second.
    pub async fn publish(self, path: PathBuf) {
        let tmp = path.with_extension("tmp");
        let mut said = false;
        loop {
            let r = tokio::fs::write(&tmp, self.json("running")).await;
            let r = match r {
                Ok(()) => tokio::fs::rename(&tmp, &path).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                if !said {
                    log!("--status-file {}: {e}", path.display());
                    said = true;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// `--status PATH`: the file a gateway writes, as a table.
pub fn print(path: &std::path::Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--status {}: {e}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "--status {}: not a gateway's status file ({e})",
            path.display()
        )
    })?;
    let links = doc["links"]
        .as_array()
        .ok_or_else(|| format!("--status {}: no \"links\"", path.display()))?;
    let head = [
        "PEER", "ROLE", "STATE", "LINKS", "OPEN", "STREAMS", "SENT", "RECEIVED", "RESETS",
    ];
    let rows: Vec<Vec<String>> = links
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or("?").to_string();
            let n = |k: &str| l[k].as_u64().map_or("?".into(), |v| v.to_string());
            vec![
                s("peer"),
                s("role"),
                s("state"),
                n("links_established"),
                n("streams_open"),
                n("streams_total"),
                n("bytes_sent"),
                n("bytes_received"),
                n("resets"),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let out: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            // Names left, counts right.
            .map(|(i, (c, w))| {
                if i < 3 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        println!("{}", out.join("  ").trim_end());
    };
    line(&head.map(String::from));
    for r in &rows {
        line(r);
    }
    if rows.is_empty() {
        println!("(no peer links)");
    }
    println!("{}", gateway_line(&doc));
    Ok(())
}

/// Whether the gateway that wrote the file runs: "stopped" is its last
/// word; "running" with its pid gone is a gateway that was killed (or a
/// file from before pids were written).
fn gateway_line(doc: &serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let age = doc["updated"]
        .as_u64()
        .map_or("at an unknown time".into(), |t| {
            format!("{}s ago", now.saturating_sub(t))
        });
    let Some(pid) = doc["pid"].as_u64() else {
        return "gateway: unknown (the file names no pid)".into();
    };
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    match doc["gateway"].as_str() {
        Some("stopped") => format!("gateway: stopped (pid {pid}, written {age})"),
        Some("running") if alive => format!("gateway: running (pid {pid}, written {age})"),
        _ => format!(
            "gateway: not running (pid {pid} is gone and left no final state: killed?; written {age})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_or_killed_gateway_is_told_from_a_running_one() {
        let board = Board::default();
        let peer = board.add("10.211.0.2:15008".into(), "dialed");
        peer.up.store(true, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gw-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.json");
        let doc = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let running = doc(&board.json("running"));
        assert!(gateway_line(&running).starts_with("gateway: running (pid"));
        assert_eq!(running["links"][0]["state"], "up");
        board.publish_stopped(&path);
        let stopped = doc(&std::fs::read_to_string(&path).unwrap());
        assert!(gateway_line(&stopped).starts_with("gateway: stopped (pid"));
        assert_eq!(stopped["links"][0]["state"], "down");
        // Killed: "running" and a pid that is not there (above pid_max).
        let mut killed = running.clone();
        killed["pid"] = serde_json::json!(1u64 << 40);
        assert!(gateway_line(&killed).starts_with("gateway: not running"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
