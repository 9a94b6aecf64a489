//! `fsct-train orchestrator --port P`: burn-collective's global orchestrator, which the nodes of
//! a multi-node run (`run.nodes`, `run.orchestrator`) register with and which coordinates their
//! all-reduces (`burn_collective::start_global_orchestrator`, a WebSocket server).

use anyhow::Result;

use crate::error::InputError;

/// Serves the orchestrator on `port` (all interfaces) until the process is interrupted.
///
/// # Errors
/// An [`InputError`] (exit code 2) when the port cannot be bound; the tokio runtime failing to
/// start.
pub fn serve(port: u16) -> Result<()> {
    // burn-communication's server logs a bind failure and returns; check the port first so that
    // a busy port is one clear error.
    std::net::TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        InputError::new(format!(
            "--port {port}: cannot listen there ({e}); pick a free port and give the nodes the same one in run.orchestrator"
        ))
    })?;
    tracing::info!(
        port,
        "orchestrator listening: start each node with run.orchestrator = \"<this host>:{port}\""
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the orchestrator's runtime: {e}"))?;
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}
