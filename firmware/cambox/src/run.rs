//! `cambox run`: the box.

use std::sync::Arc;

use anyhow::Context;
use cambox_node::mesh::Mesh;
use cambox_node::metrics::Metrics;
use cambox_node::{http, registry_client, Station};

use crate::config::RunConfig;
use crate::trust_files::TrustFiles;

pub async fn run(cli: RunConfig) -> anyhow::Result<()> {
    let cli_config = cli.config.clone();
    let mut cfg = cli.with_file()?;
    let token = cfg
        .join_token
        .as_deref()
        .map(cambox_trust::JoinToken::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("join_token: {e}"))?;
    // A token names its site: a box given only a token is at that site.
    if let (None, Some(t)) = (&cfg.site, &token) {
        cfg.site = Some(t.site.clone());
    }
    let settings = cfg.settings()?;
    let addr = cfg.http_addr();
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for HTTP on {addr} (in use? try --http 127.0.0.1:8081)")
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    let https_addr = cfg.https_addr()?;
    let mut mesh_settings = cfg.mesh_settings(&settings)?;
    let rtsp = match cfg.rtsp_addr()? {
        None => None,
        Some((addr, required)) => match cambox_node::rtsp::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) if !required => {
                eprintln!("cambox: RTSP is off: {e}");
                None
            }
            Err(e) => return Err(e.into()),
        },
    };
    let rtsp_local = rtsp.as_ref().and_then(|l| l.local_addr().ok());
    mesh_settings.rtsp_port = rtsp_local.map(|a| a.port());
    let station = Arc::new(Station::new(settings, Arc::new(Metrics::new())));
    if let Some(path) = &cfg.release_file {
        station.load_release(path);
    }
    mesh_settings.watchers = station.watchers.clone();
    if let Some(a) = rtsp_local {
        station.set_rtsp_addr(a);
    }
    // Claimed for as long as the box runs: a second box with this key is refused here.
    let (identity, _key_claim) = crate::box_files::claim_node_key(&cfg.key_path())?;
    let registries = cfg.registries()?;
    let reach = cfg.reachable()?;
    let update_health = cfg.update_health()?;
    let client = cambox_node::client::ApiClient::through(
        cfg.ca_file.as_deref(),
        cfg.proxy_addr()?.as_deref(),
    )
    .context("--ca-file")?;
    let trust_files = TrustFiles {
        mesh_ca: cfg.mesh_ca.clone(),
        node_cert: cfg.node_cert_path(),
        join_token: token.as_ref(),
        registries: &registries,
        client: &client,
        identity: &identity,
        site: &station.settings.site,
        name: &station.settings.node,
        web_names: match https_addr {
            Some(_) => crate::trust_files::web_names(&identity, &station.settings.node, local),
            None => Vec::new(),
        },
    };
    mesh_settings.trust = trust_files.trust().await?;
    let https = match (https_addr, trust_files.web()) {
        (Some(addr), Some(web)) => Some(https_listener(&web, addr).await?),
        _ => None,
    };
    let accounts = crate::user_cmd::load(&cfg.users_path())?;
    let oidc = cfg
        .oidc()?
        .map(|o| cambox_node::auth::oidc::Oidc::new(o, client.clone()));
    match (accounts.users.len(), &oidc) {
        (0, None) => eprintln!("cambox: nobody needs to log in (no accounts, no single sign-on)"),
        (n, sso) => eprintln!(
            "cambox: viewers log in: {n} local account(s){}",
            sso.as_ref()
                .map(|o| format!(", single sign-on with {}", o.issuer()))
                .unwrap_or_default()
        ),
    }
    let _ = station
        .auth
        .set(Arc::new(cambox_node::auth::Auth::new(accounts, oidc)));
    let audit = Arc::new(cfg.audit_log()?);
    let _ = station.audit.set(audit.clone());
    tokio::spawn(async move {
        // Old records go even when nothing new is written.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tick.tick().await;
            audit.prune(std::time::SystemTime::now());
        }
    });
    let (sensors, actuators) = cfg.bus_devices()?;
    let board = cambox_node::board::open(cfg.gpio_pins()?)?;
    // Updates keep their record and bundles beside the node key (the data partition).
    let key_dir = cfg
        .key_path()
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(
            || std::path::PathBuf::from("."),
            std::path::Path::to_path_buf,
        );
    mesh_settings.updates = crate::update_cmd::mesh_settings(&cfg, &station, &key_dir);
    cambox_node::board::runner::spawn(board, station.clone(), crate::reset::action(&cli_config))
        .context("cannot start the board thread")?;
    let mesh = Mesh::start(
        mesh_settings,
        identity.clone(),
        station.on_air(),
        station.metrics.clone(),
    )
    .await?;
    eprintln!(
        "cambox: mesh node {} on udp {}{}",
        mesh.id.short(),
        mesh.local_addr,
        mesh.tcp_addr
            .map_or(String::new(), |a| format!(" and tcp {a}"))
    );
    let _ = station.mesh.set(mesh.clone());
    let _ = station.update_dir.set(key_dir.clone());
    cambox_node::update::health::spawn(station.clone(), mesh.clone(), key_dir, update_health);
    cambox_node::bus::start(station.clone(), mesh.clone(), sensors, actuators);
    if !registries.is_empty() {
        registry_client::spawn(
            registry_client::Registering {
                urls: registries,
                token: cfg.registry_token.clone(),
                client,
                reachable: reach,
                proxy: cfg.proxy_addr()?,
            },
            identity,
            station.clone(),
            mesh.clone(),
            local,
        );
    }
    // A registry this box serves admits what its mesh admits (it enrols nobody: the
    // enrolment key belongs on a registry of its own).
    let served_ca = match &mesh.trust {
        Some(t) => Some(Arc::new(
            cambox_registry::CompanyCa::new(t.admission(), None, 0).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let registry = cfg.serve_registry.unwrap_or(false).then(|| {
        eprintln!("cambox: serving a registry at /registry on the HTTP address below");
        Arc::new(cambox_registry::Registry::new(
            cambox_registry::Limits::default(),
            cambox_registry::Admission {
                allow: Vec::new(),
                token: cfg.registry_token.clone(),
                ca: served_ca.clone(),
            },
        ))
    });
    let shown = format!("http://{}/", reachable(local));
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
    if let Some(listener) = rtsp {
        if let Some(a) = rtsp_local {
            eprintln!(
                "cambox: RTSP on {a} rtsp://{}/{}",
                reachable(a),
                station.settings.stream
            );
        }
        tokio::spawn(cambox_node::rtsp::serve(listener, station.clone()));
    }
    let ports = webrtc_ports(&cfg).await?;
    eprintln!(
        "cambox: WebRTC viewers on {} and {}",
        match ports.udp_port() {
            0 => "UDP ports the kernel picks".to_string(),
            p => format!("UDP port {p}"),
        },
        ports
            .tcp_listen()
            .map_or("no TCP (ICE-TCP off)".into(), |a| format!("ICE-TCP {a}"))
    );
    let _ = station.webrtc.set(ports);
    station.mark_started();
    let server = http::serve_on(listener, station.clone(), registry, https);
    tokio::select! {
        r = server => r.context("HTTP server stopped")?,
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            let st = station.clone();
            let _ = tokio::task::spawn_blocking(move || st.set_live(false)).await;
            mesh.shutdown().await;
        }
    }
    Ok(())
}

/// The WebRTC ports every viewer shares. The defaults move to ports the kernel picks when
/// taken (a second box on one machine); ports asked for must be had.
async fn webrtc_ports(cfg: &RunConfig) -> anyhow::Result<Arc<cambox_node::whep::ports::Ports>> {
    use cambox_node::whep::ports::Ports;
    let (udp, tcp, required) = cfg.webrtc_ports()?;
    let udp_free = std::net::UdpSocket::bind(("0.0.0.0", udp)).is_ok();
    let udp = if udp_free || required { udp } else { 0 };
    match Ports::bind(udp, tcp).await {
        Ok(p) => Ok(p),
        Err(e) if !required => {
            eprintln!("cambox: {e}; a port the kernel picks instead");
            let any = tcp.map(|a| std::net::SocketAddr::new(a.ip(), 0));
            Ok(Ports::bind(0, any).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The HTTPS listener on `addr` with the box's certificate.
async fn https_listener(
    web: &crate::trust_files::WebCertificate,
    addr: std::net::SocketAddr,
) -> anyhow::Result<http::Https> {
    let config = cambox_node::https::server_config(&web.chain, &web.key)
        .map_err(|e| anyhow::anyhow!("the HTTPS certificate: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen for HTTPS on {addr} (in use? try --https 127.0.0.1:8444)")
    })?;
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!(
        "cambox: HTTPS on {local} https://{}/ for {}; plain HTTP redirects there",
        reachable(local),
        web.names.join(", ")
    );
    Ok(http::Https { listener, config })
}

/// Where a person on this machine reaches a server listening on `addr`: the loopback
/// address in place of "any".
fn reachable(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    }
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
