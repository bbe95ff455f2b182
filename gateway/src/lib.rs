//! shmnet-gateway: carries local connections to remote address ranges as
//! HTTP/2 CONNECT streams over one mutual-TLS connection per peer gateway
//! (HBONE, as Istio's ztunnel), and serves such streams from peers by
//! connecting onward. docs/design/gateway.md.

mod config;
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
    if let Some(path) = args.status_file.clone() {
        tokio::spawn(board.clone().publish(path));
    }
    tokio::select! {
        () = signals.next() => {}
        Some(_) = tasks.join_next() => return Err("a listener stopped".into()),
    }
    // Stopping: GOAWAY to every peer that dialed us, no more listening
    // (a new gateway may bind our ports now), and the streams in flight
    // given --drain-timeout to end.
    let limit = settings.drain_timeout;
    let _ = stop.send(true);
    tasks.shutdown().await;
    let (open, _) = board.busy();
    log!(
        "stopping: GOAWAY to peers, listeners closed; {open} streams open, waiting up to {limit:?}"
    );
    let drained = async {
        while board.busy() != (0, 0) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = drained => log!("stopped: every stream ended"),
        () = tokio::time::sleep(limit) => {
            let (open, _) = board.busy();
            log!("stopped: --drain-timeout passed, {open} streams reset");
        }
        () = signals.next() => log!("stopped at once (second signal): {} streams reset", board.busy().0),
    }
    Ok(())
}

/// SIGTERM and SIGINT: the first stops gracefully, a second at once.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
        let int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
        Ok(Signals { term, int })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
