//! `cambox registry`: the registry as a process of its own (one per company, or two for
//! redundancy); any box can also serve one with `--serve-registry`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use cambox_mesh::NodeId;
use cambox_node::connection_limit::{self, PerSourceListener};
use cambox_registry::{api, Admission, Limits, Registry};

#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Listen for HTTP here (put a TLS reverse proxy in front on an open network).
    #[arg(
        long,
        env = "CAMBOX_REGISTRY_HTTP",
        default_value = "0.0.0.0:8090",
        value_name = "ADDR"
    )]
    pub http: SocketAddr,
    /// Only these nodes may register: their ids, 64 hex digits (repeatable).
    #[arg(
        long = "allow",
        env = "CAMBOX_REGISTRY_ALLOW",
        value_delimiter = ',',
        value_name = "NODE_ID"
    )]
    pub allow: Vec<String>,
    /// Boxes must send this token (`registry_token` in their config).
    #[arg(long, env = "CAMBOX_REGISTRY_TOKEN")]
    pub token: Option<String>,
    /// Registrations accepted per source address per minute.
    #[arg(long, default_value_t = 120)]
    pub rate: u32,
    /// Seconds between a box's renewals (boxes are told this).
    #[arg(long, default_value_t = 10)]
    pub heartbeat: u64,
}

pub fn parse_allow(ids: &[String]) -> anyhow::Result<Vec<NodeId>> {
    ids.iter()
        .map(|s| {
            NodeId::from_hex(s.trim())
                .with_context(|| format!("--allow '{s}' is not a node id (64 hex digits; see a box's /api/v1/status node_id)"))
        })
        .collect()
}

pub fn limits(rate: u32, heartbeat: u64) -> anyhow::Result<Limits> {
    if !(1..=3600).contains(&heartbeat) {
        anyhow::bail!("--heartbeat {heartbeat} is out of range (1-3600 s)");
    }
    Ok(Limits {
        per_source_per_minute: rate.max(1),
        heartbeat: Duration::from_secs(heartbeat),
        ..Limits::default()
    })
}

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::new(
        limits(args.rate, args.heartbeat)?,
        Admission {
            allow: parse_allow(&args.allow)?,
            token: args.token,
        },
    ));
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| {
            format!(
                "cannot listen for HTTP on {} (in use? try --http 0.0.0.0:8091)",
                args.http
            )
        })?;
    let local = listener.local_addr()?;
    eprintln!("cambox: registry at http://{local}/ (OpenAPI at /api/v1/openapi.json)");
    api::spawn_expiry(registry.clone());
    let app = api::router(registry, "");
    // As on a box: one address holds at most so many connections open (thousands of
    // boxes each hold one while they register). `tap_io` gives handlers the remote
    // address for a listener of our own.
    let listener =
        PerSourceListener::new(listener, connection_limit::MAX_PER_SOURCE).tap_io(|_| {});
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("registry HTTP server")
}
