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

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

fn main() -> ExitCode {
    let args = config::Args::parse();
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
    let identity = tls::Identity::load(&args.cert, &args.key, &args.ca)?;
    let board = status::Board::default();
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
        tokio::spawn(board.publish(path));
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminated() => Ok(()),
        Some(_) = tasks.join_next() => Err("a listener stopped".into()),
    }
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
