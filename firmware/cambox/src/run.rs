//! `cambox run`: the box.

use std::sync::Arc;

use anyhow::Context;
use cambox_node::metrics::Metrics;
use cambox_node::{http, Station};

use crate::config::RunConfig;

pub async fn run(cli: RunConfig) -> anyhow::Result<()> {
    let cfg = cli.with_file()?;
    let settings = cfg.settings()?;
    let addr = cfg.http_addr();
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for HTTP on {addr} (in use? try --http 127.0.0.1:8081)")
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    let station = Arc::new(Station::new(settings, Arc::new(Metrics::new())));
    let shown = if local.ip().is_unspecified() {
        format!("http://127.0.0.1:{}/", local.port())
    } else {
        format!("http://{local}/")
    };
    eprintln!(
        "cambox: box '{}' at {shown} (stream {}live/{}.mp4)",
        station.settings.node, shown, station.settings.stream
    );
    if cfg.live.unwrap_or(false) {
        let st = station.clone();
        tokio::task::spawn_blocking(move || st.set_live(true))
            .await
            .context("going live")?
            .context("cannot go live")?;
    } else {
        eprintln!(
            "cambox: waiting for the button: press 'Go live' on the page or POST /api/v1/live"
        );
    }
    let server = http::serve_on(listener, station.clone());
    tokio::select! {
        r = server => r.context("HTTP server stopped")?,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            let st = station.clone();
            let _ = tokio::task::spawn_blocking(move || st.set_live(false)).await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
