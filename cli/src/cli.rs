//! The command line (clap derive); `shmnet man` renders it as shmnet(1).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const ABOUT: &str =
    "Run programs over libshmnet's shared-memory network, see its sockets, check a setup";

const LONG_ABOUT: &str = "\
libshmnet.so, loaded with LD_PRELOAD, carries TCP connections between local \
programs through shared memory instead of the kernel. `shmnet run` starts a \
program with it; `shmnet ss` lists the emulated sockets of the processes on \
this host that use one rendezvous directory (SHMNET_DIR); `shmnet check` \
diagnoses a setup; `shmnet nic` joins network namespaces with a \
shared-memory NIC; `shmnet gateway` carries connections to other hosts over \
one mutual-TLS HTTP/2 link per peer. Settings are environment variables (SHMNET_PARTITIONS, \
SHMNET_FALLBACK, SHMNET_DIR, SHMNET_LOG...), described in docs/configuration.md.";

#[derive(Parser, Debug)]
#[command(name = "shmnet", about = ABOUT, long_about = LONG_ABOUT, version, disable_version_flag = true)]
pub(crate) struct Cli {
    /// Print shmnet's version and the library's (version, path, build id)
    #[arg(short = 'V', long)]
    pub(crate) version: bool,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a program with libshmnet preloaded (like smc_run or onload)
    Run(RunArgs),
    /// List the emulated sockets of live processes (also: status)
    #[command(visible_alias = "status")]
    Ss(SsArgs),
    /// Diagnose a setup: library, configuration, directory, and a pair
    Check(CheckArgs),
    /// A shared-memory NIC between network namespaces (TUN devices whose
    /// wire is a shared-memory region; docs/nic.md)
    Nic(crate::nic::NicArgs),
    /// Carry connections to other hosts' ranges (SHMNET_REMOTE) over one
    /// mutual-TLS HTTP/2 link per peer gateway, each as a CONNECT stream
    /// (HBONE), and serve peers' streams (docs/design/gateway.md). Run it
    /// preloaded with SHMNET_GATEWAY=ADDR:PORT and --listen on that address
    /// for local programs to reach it through shared memory. The same
    /// program as shmnet-gateway
    Gateway(shmnet_gateway::Args),
    /// (internal) the preloaded probe of `shmnet check`
    #[command(name = "__probe", hide = true)]
    Probe(ProbeArgs),
    /// (internal) print the man page shmnet(1) in roff
    #[command(hide = true)]
    Man,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Fallback {
    /// Kernel TCP when the peer is not preloaded (the default)
    Tcp,
    /// Partition addresses exist only in shared memory
    Never,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Partition ranges (SHMNET_PARTITIONS): comma-separated CIDRs
    #[arg(long, value_name = "CIDRS")]
    pub(crate) partitions: Option<String>,
    /// What happens without a shared-memory peer (SHMNET_FALLBACK)
    #[arg(long, value_enum)]
    pub(crate) fallback: Option<Fallback>,
    /// Rendezvous and status directory (SHMNET_DIR)
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Log level (SHMNET_LOG): error, warn, info, debug or trace
    #[arg(long, value_name = "LEVEL")]
    pub(crate) log: Option<String>,
    /// The library to preload (default: SHMNET_LIB, next to shmnet, the
    /// install prefix's lib/, the build tree)
    #[arg(long, value_name = "PATH")]
    pub(crate) lib: Option<PathBuf>,
    /// The program and its arguments
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub(crate) command: Vec<std::ffi::OsString>,
}

#[derive(Args, Debug)]
pub(crate) struct SsArgs {
    /// Only the sockets of this process
    #[arg(short, long, value_name = "PID")]
    pub(crate) pid: Option<u32>,
    /// Machine-readable output
    #[arg(long)]
    pub(crate) json: bool,
    /// A summary: sockets by state and the connection counters (how
    /// connects went: shared memory or kernel TCP, and why), since the
    /// counters file was made and per live process since it started;
    /// with --json the same facts (docs/status.md)
    #[arg(short, long)]
    pub(crate) summary: bool,
    /// The directory the processes use (default: as the library works it
    /// out: SHMNET_DIR, else $XDG_RUNTIME_DIR/shmnet, else /tmp/shmnet-<euid>)
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// Also connect to a listener at HOST:PORT with the library preloaded
    /// and say whether the connection went over shared memory, or why not
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) pair: Option<String>,
    /// The library to check (default: as `shmnet run` finds it)
    #[arg(long, value_name = "PATH")]
    pub(crate) lib: Option<PathBuf>,
    /// The directory to check (default: as the library works it out)
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Machine-readable output
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ProbeArgs {
    #[arg(long)]
    pub(crate) pair: Option<String>,
}
