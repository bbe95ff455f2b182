//! What `--status-file` shows, per peer link: its state, how many times it
//! was established, streams open and carried, bytes each way, resets. The
//! file is JSON, rewritten every second (written aside, then renamed: a
//! reader never sees half of it).

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
        let open = peers.iter().map(|p| p.open.load(Ordering::Relaxed)).sum();
        let accepted = peers.iter().filter(|p| p.role == "accepted").count();
        (open, accepted)
    }

    fn json(&self) -> String {
        let peers = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list: Vec<String> = peers.iter().map(|p| p.json()).collect();
        format!("{{\"links\":[{}]}}\n", list.join(","))
    }

    /// Rewrites `path` every second.
    pub async fn publish(self, path: PathBuf) {
        let tmp = path.with_extension("tmp");
        let mut said = false;
        loop {
            let r = tokio::fs::write(&tmp, self.json()).await;
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
    Ok(())
}
