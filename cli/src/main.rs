//! `shmnet`: run programs over libshmnet, list its sockets, check a setup.
//! Every subcommand is a module; `cli` holds the argument definitions
//! (also the source of the man page).

mod check;
mod cli;
mod dir;
mod library;
mod man;
mod nic;
mod probe;
mod queues;
mod rings;
mod run;
mod ss;
mod stats;
mod status;
mod summary;
mod units;

use clap::Parser;

fn main() {
    // A NIC's warden started again by the daemon (never typed by a user).
    let raw: Vec<String> = std::env::args().collect();
    if raw.get(1).map(String::as_str) == Some(shmnet_nic::warden::RESPAWN_ARG) {
        shmnet_nic::warden::respawned_main(&raw[2..]);
    }
    // `shmnet ss | head` ends quietly, as other tools do.
    // SAFETY: restoring the default action of a signal; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let args = cli::Cli::parse();
    if args.version {
        println!("shmnet {}", library::version_line());
        std::process::exit(0);
    }
    let Some(command) = args.command else {
        let _ = <cli::Cli as clap::CommandFactory>::command().print_help();
        std::process::exit(2);
    };
    let code = match command {
        cli::Command::Run(a) => run::main(a),
        cli::Command::Ss(a) => ss::main(a),
        cli::Command::Check(a) => check::main(a),
        cli::Command::Probe(a) => probe::main(a),
        cli::Command::Nic(a) => nic::main(a),
        cli::Command::Gateway(a) => {
            i32::from(shmnet_gateway::main(a) != std::process::ExitCode::SUCCESS)
        }
        cli::Command::Man => {
            use std::io::Write;
            let cmd = <cli::Cli as clap::CommandFactory>::command();
            match std::io::stdout().write_all(man::render(&cmd).as_bytes()) {
                Ok(()) => 0,
                Err(e) => fail(format_args!("cannot write the man page: {e}")),
            }
        }
    };
    std::process::exit(code);
}

/// One line on stderr saying what went wrong and what to do; exit code 1.
pub(crate) fn fail(what: std::fmt::Arguments<'_>) -> i32 {
    eprintln!("shmnet: {what}");
    1
}
