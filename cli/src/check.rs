//! `shmnet check`: a setup diagnosed the way smc_chk does. Each check is
//! a line: what was looked at, ok / WARN / FAIL, and what to do. Exit 0
//! when nothing failed, 1 otherwise.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::cli::CheckArgs;

#[derive(Serialize)]
struct Verdict {
    check: &'static str,
    /// "ok", "warn" or "fail"
    verdict: &'static str,
    detail: String,
}

fn ok(check: &'static str, detail: String) -> Verdict {
    Verdict {
        check,
        verdict: "ok",
        detail,
    }
}

fn warn(check: &'static str, detail: String) -> Verdict {
    Verdict {
        check,
        verdict: "warn",
        detail,
    }
}

fn bad(check: &'static str, detail: String) -> Verdict {
    Verdict {
        check,
        verdict: "fail",
        detail,
    }
}

pub(crate) fn main(a: CheckArgs) -> i32 {
    let mut out = Vec::new();
    let lib = match crate::library::find(a.lib.as_deref()) {
        Ok(lib) => Some(lib),
        Err(e) => {
            out.push(bad("library", e));
            None
        }
    };
    let dir = crate::dir::resolve(a.dir.as_deref());
    let mut pair = None;
    if let Some(lib) = &lib {
        pair = check_library(lib, &dir, a.pair.as_deref(), &mut out);
    }
    out.push(match crate::dir::verdict(&dir) {
        Ok(d) => ok("directory", d),
        Err(e) => bad("directory", format!("SHMNET_DIR {e}")),
    });
    out.extend(pair);
    let failed = out.iter().any(|v| v.verdict == "fail");
    if a.json {
        let doc = serde_json::json!({ "ok": !failed, "checks": out });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        for v in &out {
            let mark = match v.verdict {
                "ok" => "ok  ",
                "warn" => "WARN",
                _ => "FAIL",
            };
            println!("{:<14} {mark}  {}", v.check, v.detail);
        }
    }
    i32::from(failed)
}

/// Loads the library into a probe (this binary, preloaded), which reports
/// its version, any `libshmnet:` complaint about the configuration, and
/// with `pair` how a connect went.
fn check_library(
    lib: &Path,
    dir: &Path,
    pair: Option<&str>,
    out: &mut Vec<Verdict>,
) -> Option<Verdict> {
    let id = match crate::library::identify(lib) {
        Ok(id) => id,
        Err(e) => {
            out.push(bad("library", e));
            return None;
        }
    };
    let Ok(me) = std::env::current_exe() else {
        out.push(bad(
            "library",
            "cannot find the shmnet binary to run a probe (/proc mounted?)".into(),
        ));
        return None;
    };
    let mut cmd = Command::new(me);
    cmd.arg("__probe")
        .env("LD_PRELOAD", lib)
        .env("SHMNET_DIR", dir);
    if let Some(p) = pair {
        cmd.args(["--pair", p]);
    }
    let probe = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            out.push(bad("library", format!("cannot run the probe: {e}")));
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&probe.stdout);
    let stderr = String::from_utf8_lossy(&probe.stderr);
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    let loaded = report["version"].as_str().map(str::to_owned);
    let build = id.build_id.as_deref().unwrap_or("none");
    out.push(match &loaded {
        Some(v) => ok(
            "library",
            format!("{} loads: version {v}, build-id {build}", lib.display()),
        ),
        None => {
            let why = stderr
                .lines()
                .find(|l| l.contains("LD_PRELOAD") || l.contains("libshmnet"))
                .unwrap_or("it did not answer");
            bad(
                "library",
                format!("{} does not load into a program: {why}", lib.display()),
            )
        }
    });
    // The library names a bad setting in one `libshmnet:` line and turns
    // itself off; directory complaints are the directory check's.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("libshmnet:") && !l.contains("SHMNET_DIR"))
        .collect();
    let off = !complaints.is_empty();
    out.push(if off {
        bad(
            "configuration",
            format!(
                "{} (the library is off in programs with this environment)",
                complaints.join("; ")
            ),
        )
    } else {
        ok("configuration", settings())
    });
    out.extend(
        unknown_settings()
            .into_iter()
            .map(|w| warn("configuration", w)),
    );
    pair.map(|p| pair_verdict(p, &report, off))
}

/// The variables the library (and `shmnet`) read (docs/configuration.md).
const SETTINGS: [&str; 14] = [
    "SHMNET_ALLOW",
    "SHMNET_ASYNC_CONNECT",
    "SHMNET_DEFER",
    "SHMNET_DIR",
    "SHMNET_FALLBACK",
    "SHMNET_GATEWAY",
    "SHMNET_LIB",
    "SHMNET_LOG",
    "SHMNET_LOG_FILE",
    "SHMNET_PARTITIONS",
    "SHMNET_REMOTE",
    "SHMNET_RING_BYTES",
    "SHMNET_SPIN_US",
    "SHMNET_UDP",
];

/// A WARN line per SHMNET_* variable that is no setting (a typo is
/// otherwise silently the default), naming the setting it is closest to.
fn unknown_settings() -> Vec<String> {
    let mut out: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("SHMNET_") && !SETTINGS.contains(&k.as_str()))
        .map(|k| {
            // Close: a few edits of a name, not most of it ("SHMNET_X").
            let name = &k["SHMNET_".len()..];
            let close = SETTINGS
                .iter()
                .map(|s| (edits(name, &s["SHMNET_".len()..]), *s))
                .min()
                .filter(|(d, _)| *d <= 2 && 2 * d < name.len());
            match close {
                Some((_, s)) => format!("{k} is not a setting (ignored): did you mean {s}?"),
                None => {
                    format!("{k} is not a setting (ignored; the settings: docs/configuration.md)")
                }
            }
        })
        .collect();
    out.sort();
    out
}

/// Levenshtein distance (short ASCII names).
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<u8> = b.bytes().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The SHMNET_* settings in force, for the configuration line.
fn settings() -> String {
    let vars: Vec<String> = std::env::vars()
        .filter(|(k, v)| SETTINGS.contains(&k.as_str()) && !v.is_empty() && k != "SHMNET_LIB")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if vars.is_empty() {
        "defaults (SHMNET_PARTITIONS=127.0.0.0/8,::1/128, SHMNET_FALLBACK=tcp)".into()
    } else {
        vars.join(" ")
    }
}

/// How the probe's connect went, from what its library counted (the
/// connect's outcome is counted in both modes: `shm`, or why kernel TCP);
/// `off`: the library refused the configuration and passes everything
/// through.
fn pair_verdict(pair: &str, report: &serde_json::Value, off: bool) -> Verdict {
    let took = report["connect_us"]
        .as_u64()
        .map(|us| crate::units::duration(std::time::Duration::from_micros(us)))
        .unwrap_or_default();
    let never =
        std::env::var("SHMNET_FALLBACK").is_ok_and(|v| v.trim().eq_ignore_ascii_case("never"));
    if let Some(e) = report["connect"].as_str().filter(|s| *s != "ok") {
        let hint = if off {
            "is a listener running there? (the library is off: see the configuration line)"
        } else if never {
            "nothing preloaded listens there (SHMNET_FALLBACK=never: a partition address \
             exists only in shared memory, a listener without the library cannot be reached; \
             start the server with `shmnet run`)"
        } else {
            "is a listener running there?"
        };
        return bad("pair", format!("{pair}: connect failed ({e}): {hint}"));
    }
    if off {
        return bad(
            "pair",
            format!("{pair}: connected over kernel TCP in {took}: the library is off (see the configuration line)"),
        );
    }
    let Some(c) = report["counters"].as_array() else {
        return bad(
            "pair",
            format!("{pair}: the library did not say how the connect went"),
        );
    };
    let n = |i: usize| c.get(i).and_then(|v| v.as_u64()).unwrap_or(0);
    let reasons = [
        (1, "no shared-memory listener there: start the server with the library preloaded (shmnet run)"),
        (2, "the listener's rendezvous refused (gone, backlog full, or handshake failed)"),
        (3, "no resources for a segment (memfd, mmap, fds, RLIMIT_FSIZE)"),
        (4, "the two sides' SHMNET_ALLOW policies do not admit each other"),
        (5, "SHMNET_DIR was needed and is refused (see the directory line)"),
    ];
    if n(0) > 0 {
        let mode = if never { " (emulated network)" } else { "" };
        return ok(
            "pair",
            format!("{pair}: connected over shared memory{mode} in {took}"),
        );
    }
    for (i, why) in reasons {
        if n(i) > 0 {
            return bad(
                "pair",
                format!("{pair}: connected over kernel TCP in {took}: {why}"),
            );
        }
    }
    // Nothing counted: the library let the connect through untouched.
    bad(
        "pair",
        format!(
            "{pair}: connected over kernel TCP in {took}: the address is not in SHMNET_PARTITIONS ({})",
            std::env::var("SHMNET_PARTITIONS").unwrap_or_else(|_| "default 127.0.0.0/8,::1/128".into())
        ),
    )
}
