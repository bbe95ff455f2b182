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
    out.push(if complaints.is_empty() {
        ok("configuration", settings())
    } else {
        bad(
            "configuration",
            format!(
                "{} (the library is off in programs with this environment)",
                complaints.join("; ")
            ),
        )
    });
    pair.map(|p| pair_verdict(p, &report))
}

/// The SHMNET_* settings in force, for the configuration line.
fn settings() -> String {
    let vars: Vec<String> = std::env::vars()
        .filter(|(k, v)| k.starts_with("SHMNET_") && !v.is_empty() && k != "SHMNET_LIB")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if vars.is_empty() {
        "defaults (SHMNET_PARTITIONS=127.0.0.0/8,::1/128, SHMNET_FALLBACK=tcp)".into()
    } else {
        vars.join(" ")
    }
}

fn pair_verdict(pair: &str, report: &serde_json::Value) -> Verdict {
    let took = report["connect_us"]
        .as_u64()
        .map(|us| crate::units::duration(std::time::Duration::from_micros(us)))
        .unwrap_or_default();
    if let Some(e) = report["connect"].as_str().filter(|s| *s != "ok") {
        return bad(
            "pair",
            format!("{pair}: connect failed ({e}): is a listener running there?"),
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
        return ok(
            "pair",
            format!("{pair}: connected over shared memory in {took}"),
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
    // The emulated mode (SHMNET_FALLBACK=never) counts nothing: a connect
    // that succeeded there is shared memory.
    if std::env::var("SHMNET_FALLBACK").is_ok_and(|v| v == "never") {
        return ok(
            "pair",
            format!("{pair}: connected over shared memory (emulated network) in {took}"),
        );
    }
    bad(
        "pair",
        format!(
            "{pair}: connected over kernel TCP in {took}: the address is not in SHMNET_PARTITIONS"
        ),
    )
}
