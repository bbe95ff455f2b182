//! shmnet-gateway: carries local connections to remote address ranges as
//! HTTP/2 CONNECT streams over one mutual-TLS connection per peer gateway
//! (HBONE, as Istio's ztunnel), and serves such streams from peers by
//! connecting onward. docs/design/gateway.md.

mod config;
mod early;
mod inbound;
mod link;
mod log;
mod outbound;
mod pending;
mod reclaim;
mod source;
mod splice;
mod status;
mod tls;

pub use config::Args;

use std::process::ExitCode;
use std::sync::Arc;

/// Runs the gateway until it is stopped (`shmnet-gateway` and `shmnet
/// gateway` both call this).
pub fn main(args: Args) -> ExitCode {
    if let Some(path) = &args.status {
        return match status::print(path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: config::Args) -> Result<(), String> {
    let settings = Arc::new(args.settings());
    let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) else {
        return Err("give --cert, --key and --ca".into());
    };
    let identity = tls::Identity::load(cert, key, ca)?;
    let board = status::Board::default();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut signals = Signals::new()?;
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(addr) = args.peer_listen {
        let server = identity.server_config()?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--peer-listen {addr}: {e}"))?;
        log!("peers: listening on {addr}");
        tasks.spawn(inbound::serve(
            listener,
            server,
            args.serve.clone(),
            settings.clone(),
            board.clone(),
            stopping,
        ));
    }
    let routes = outbound::Routes::new(&args.remote, identity.client_config()?, &settings, &board);
    for addr in &args.listen {
        if reclaim::is_gateway_address(*addr) {
            // The library's gateway name goes with this one: kept ours.
            let listener = reclaim::listen(*addr).map_err(|e| format!("--listen {addr}: {e}"))?;
            log!("local: listening on {addr}");
            tasks.spawn(reclaim::serve(*addr, listener, routes.clone()));
            continue;
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--listen {addr}: {e}"))?;
        log!("local: listening on {addr}");
        tasks.spawn(outbound::serve(listener, routes.clone()));
    }
    if tasks.is_empty() {
        return Err("nothing to do: give --peer-listen and/or --listen".into());
    }
    let published = args
        .status_file
        .clone()
        .map(|path| tokio::spawn(board.clone().publish(path)));
    let why = tokio::select! {
        () = signals.until(1) => None,
        Some(_) = tasks.join_next() => Some("a listener stopped"),
    };
    // Stopping: GOAWAY to every peer that dialed us, no more listening
    // (a new gateway may bind our ports now), and the streams in flight
    // given --drain-timeout to end.
    let limit = settings.drain_timeout;
    let _ = stop.send(true);
    tasks.shutdown().await;
    if why.is_none() {
        drain(&board, limit, &mut signals).await;
    }
    if let (Some(task), Some(path)) = (published, &args.status_file) {
        task.abort();
        board.publish_stopped(path);
    }
    why.map_or(Ok(()), |w| Err(w.into()))
}

/// Waits for the streams to end, at most `limit` or until a second
/// signal; then resets what is left, both ends (docs/design/gateway.md).
async fn drain(board: &status::Board, limit: std::time::Duration, signals: &mut Signals) {
    let (open, _) = board.busy();
    log!(
        "stopping: GOAWAY to peers, listeners closed; {open} streams open, waiting up to {limit:?}"
    );
    let drained = async {
        while board.busy() != (0, 0) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let why = tokio::select! {
        () = drained => return log!("stopped: every stream ended"),
        () = tokio::time::sleep(limit) => "stopped: --drain-timeout passed,",
        () = signals.until(2) => "stopped at once (second signal):",
    };
    let open = board.busy().0;
    // Each splice (and each local connection still waiting for its
    // CONNECT's answer) closes its socket with SO_LINGER 0 (a RST) and
    // sends RST_STREAM(CANCEL); exiting would close them with a FIN.
    splice::abort_all();
    let reset = async {
        while board.busy().0 != 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let _ = tokio::time::timeout(RESET_WAIT, reset).await;
    // The links' tasks write the RST_STREAM frames out.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    log!("{why} {open} streams reset");
}

/// How long the reset streams are given to close (each is a few system
/// calls; bounded so that a stuck one cannot keep the gateway).
const RESET_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// SIGTERM and SIGINT: the first stops gracefully, a second at once.
/// Every delivery is counted by a handler of our own (an atomic add, safe
/// in a signal handler): tokio's `Signal::recv` merges deliveries it has
/// not yet seen, so two back to back were one. (Two sent before the kernel
/// delivered the first are one signal still: standard signals are not
/// queued, signal(7).)
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

/// SIGTERMs and SIGINTs delivered to this process.
static DELIVERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Signals {
    fn new() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        for sig in [libc::SIGTERM, libc::SIGINT] {
            // SAFETY: the action only adds to an atomic (async-signal-safe).
            unsafe {
                signal_hook_registry::register(sig, || {
                    DELIVERED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                })
            }
            .map_err(|e| format!("signal {sig}: {e}"))?;
        }
        let term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        Ok(Signals { term, int })
    }

    /// Returns once `n` signals have been delivered since the start.
    async fn until(&mut self, n: usize) {
        while DELIVERED.load(std::sync::atomic::Ordering::SeqCst) < n {
            tokio::select! {
                _ = self.term.recv() => {}
                _ = self.int.recv() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two signals delivered before the runtime looked (tokio would see
    /// one) are two: the second stop is at once.
    #[test]
    fn two_signals_back_to_back_are_two() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut signals = Signals::new().unwrap();
            // SAFETY: raise(3) delivers to this thread before it returns;
            // our handlers replace the default action (termination).
            unsafe {
                libc::raise(libc::SIGTERM);
                libc::raise(libc::SIGTERM);
            }
            signals.until(1).await;
            let second = tokio::select! {
                biased;
                () = signals.until(2) => true,
                () = std::future::ready(()) => false,
            };
            assert!(second, "the second SIGTERM was merged into the first");
        });
    }
}
