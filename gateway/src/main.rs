//! shmnet-gateway (also `shmnet gateway`): carries local connections to remote address ranges as
//! HTTP/2 CONNECT streams over one mutual-TLS connection per peer gateway
//! (HBONE, as Istio's ztunnel), and serves such streams from peers by
//! connecting onward. docs/design/gateway.md.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    shmnet_gateway::main(shmnet_gateway::Args::parse())
}
