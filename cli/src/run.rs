//! `shmnet run`: the program, with the library preloaded and the settings
//! given as options put in its environment (what scripts/shmnet-run did).

use std::os::unix::process::CommandExt;

use crate::cli::{Fallback, RunArgs};

pub(crate) fn main(a: RunArgs) -> i32 {
    let lib = match crate::library::find(a.lib.as_deref()) {
        Ok(lib) => lib,
        Err(e) => return crate::fail(format_args!("{e}")),
    };
    // ld.so splits LD_PRELOAD at spaces and colons: such a path would be
    // skipped without a word, and the program run without the library.
    if lib.to_string_lossy().contains([' ', ':']) {
        return crate::fail(format_args!(
            "{}: LD_PRELOAD cannot name a path with a space or a colon; copy or link the \
             library to a path without them and give that with --lib",
            lib.display()
        ));
    }
    let Some((program, args)) = a.command.split_first() else {
        return crate::fail(format_args!(
            "no command given: shmnet run [OPTIONS] -- CMD [ARGS...]"
        ));
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    let preload = match std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        Some(old) => {
            let mut v = lib.clone().into_os_string();
            v.push(" ");
            v.push(old);
            v
        }
        None => lib.clone().into_os_string(),
    };
    cmd.env("LD_PRELOAD", preload);
    if let Some(p) = &a.partitions {
        cmd.env("SHMNET_PARTITIONS", p);
    }
    if let Some(f) = a.fallback {
        cmd.env(
            "SHMNET_FALLBACK",
            match f {
                Fallback::Tcp => "tcp",
                Fallback::Never => "never",
            },
        );
    }
    if let Some(d) = &a.dir {
        // The library takes only an absolute SHMNET_DIR (a relative one
        // would name another directory after a chdir).
        let d = std::path::absolute(d).unwrap_or_else(|_| d.clone());
        cmd.env("SHMNET_DIR", d);
    }
    if let Some(l) = &a.log {
        cmd.env("SHMNET_LOG", l);
    }
    let e = cmd.exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    eprintln!("shmnet: cannot run {}: {e}", program.to_string_lossy());
    code
}
