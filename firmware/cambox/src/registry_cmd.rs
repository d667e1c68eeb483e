//! `cambox registry`: the registry as a process of its own (one per company, or two for
//! redundancy); any box can also serve one with `--serve-registry`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use cambox_mesh::NodeId;
use cambox_node::connection_limit::{self, PerSourceListener};
use cambox_registry::{api, Admission, CompanyCa, Limits, Registry};
use cambox_trust::Authority;

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
    /// The registry runs behind a reverse proxy that appends each client's address to
    /// X-Forwarded-For (Caddy does by default; nginx with `proxy_set_header
    /// X-Forwarded-For $proxy_add_x_forwarded_for`): read sources from there, for the
    /// per-source rate and for finding boxes behind NAT. Only behind such a proxy: a client
    /// could otherwise name any address.
    #[arg(long)]
    pub forwarded_for: bool,
    /// The company CA's certificate (`cambox ca init`): only boxes it enrolled register,
    /// and the registry hands boxes the CA's newest revocation list.
    #[arg(long, env = "CAMBOX_REGISTRY_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// An enrolment key's directory (`cambox ca enroller`): boxes that bring a join token
    /// get their node certificate here. Needs --ca.
    #[arg(
        long,
        env = "CAMBOX_REGISTRY_ENROLLER",
        value_name = "DIR",
        requires = "ca"
    )]
    pub enroller: Option<PathBuf>,
    /// How long the node certificates the registry issues are valid, days.
    #[arg(long, default_value_t = 365)]
    pub cert_days: u32,
    /// Keep the CA's newest revocation list in this file [default: revoked.txt in the
    /// enrolment directory, if any].
    #[arg(long, value_name = "FILE", requires = "ca")]
    pub revocations: Option<PathBuf>,
    /// Take update bundles signed by these release keys (`cambox release init`'s
    /// release.pub) and hand them to the mesh through a couple of boxes; kept in
    /// --updates.
    #[arg(long, value_name = "FILE", requires = "updates")]
    pub release_keys: Option<PathBuf>,
    /// Where the registry keeps update bundles (the newest per board) and their rollouts.
    #[arg(long, value_name = "DIR", requires = "release_keys")]
    pub updates: Option<PathBuf>,
}

/// The registry's update depot, from --release-keys and --updates.
fn update_depot(keys: &Path, dir: &Path) -> anyhow::Result<cambox_registry::UpdateDepot> {
    let keys = cambox_update::ReleasePublic::load(keys).map_err(anyhow::Error::msg)?;
    cambox_registry::UpdateDepot::open(dir, keys).map_err(anyhow::Error::msg)
}

/// The company CA as a registry applies it, from `--ca` and `--enroller`.
pub fn company_ca(
    ca: &Path,
    enroller: Option<&Path>,
    days: u32,
    revocations: Option<PathBuf>,
) -> anyhow::Result<CompanyCa> {
    let rule = crate::trust_files::admission(ca)?;
    let enroller = enroller
        .map(|dir| {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "cannot read {} (made by cambox ca enroller?)",
                        path.display()
                    )
                })
            };
            Authority::from_pem(&read("enrol.crt")?, &read("enrol.key")?)
                .with_context(|| format!("the enrolment key in {}", dir.display()))
        })
        .transpose()?;
    let mut company = CompanyCa::new(rule, enroller, days).map_err(anyhow::Error::msg)?;
    if let Some(path) = revocations {
        company = company
            .keeping_revocations(path)
            .map_err(anyhow::Error::msg)?;
    }
    Ok(company)
}

pub fn parse_allow(ids: &[String]) -> anyhow::Result<Vec<NodeId>> {
    ids.iter()
        .map(|s| {
            NodeId::from_hex(s.trim())
                .with_context(|| format!("--allow '{s}' is not a node id (64 hex digits; see a box's /api/v1/status node_id)"))
        })
        .collect()
}

pub fn limits(rate: u32, heartbeat: u64, forwarded_for: bool) -> anyhow::Result<Limits> {
    if !(1..=3600).contains(&heartbeat) {
        anyhow::bail!("--heartbeat {heartbeat} is out of range (1-3600 s)");
    }
    Ok(Limits {
        per_source_per_minute: rate.max(1),
        heartbeat: Duration::from_secs(heartbeat),
        forwarded_for,
        ..Limits::default()
    })
}

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let ca = match &args.ca {
        Some(file) => {
            let kept = args
                .revocations
                .clone()
                .or_else(|| args.enroller.as_ref().map(|dir| dir.join("revoked.txt")));
            let ca = company_ca(file, args.enroller.as_deref(), args.cert_days, kept)?;
            Some(Arc::new(ca))
        }
        None => None,
    };
    let mut registry = Registry::new(
        limits(args.rate, args.heartbeat, args.forwarded_for)?,
        Admission {
            allow: parse_allow(&args.allow)?,
            token: args.token,
            ca,
        },
    );
    if let (Some(keys), Some(dir)) = (&args.release_keys, &args.updates) {
        registry = registry.with_updates(update_depot(keys, dir)?);
    }
    let registry = Arc::new(registry);
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
    match &registry.admission.ca {
        Some(ca) => eprintln!(
            "cambox: registry admits only boxes of CA {:?}{}",
            ca.rule().ca_name(),
            if args.enroller.is_some() {
                ", and enrols boxes that bring its join tokens"
            } else {
                ""
            }
        ),
        None => eprintln!("cambox: registry has no company CA: any box registers (a lab)"),
    }
    if let (Some(depot), Some(dir)) = (&registry.updates, &args.updates) {
        eprintln!(
            "cambox: registry takes update bundles and hands them to the mesh ({} held in {})",
            depot.list().len(),
            dir.display()
        );
    }
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
