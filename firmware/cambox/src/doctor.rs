//! `cambox doctor`: what this box can reach, the way the box itself would reach it, and
//! what to open in the firewall for what it cannot.
//!
//! It reads the same configuration as `cambox run` (cambox.toml, environment, flags) and
//! tries each way out: the proxy, every registry (an HTTP request, through the proxy if
//! one is set), and every static peer by a QUIC handshake over UDP and over TCP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cambox_node::mesh::probe;
use cambox_node::registry_client;
use cambox_registry::model::SeenAddress;

use crate::config::RunConfig;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub run: RunConfig,
}

/// What one check found; `advice` says what to open when it failed. `ok` is false only
/// when the box has no way at all to what was checked.
struct Finding {
    ok: bool,
    line: String,
    advice: Option<String>,
}

impl Finding {
    fn label(&self) -> &'static str {
        match (self.ok, self.advice.is_some()) {
            (true, false) => "ok  ",
            (true, true) => "WARN",
            (false, _) => "FAIL",
        }
    }
}

/// Prints what it found; an error when something needed is not reachable at all.
pub async fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let cfg = args.run.with_file()?;
    let proxy = cfg.proxy_addr()?;
    let tcp_port = cfg.mesh_tcp_port()?;
    let registries = cfg.registries()?;
    println!("cambox doctor: what this box reaches (from its configuration)");
    let mut findings = Vec::new();
    if let Some(p) = &proxy {
        findings.push(check_proxy(p).await);
    }
    let client = cambox_node::client::ApiClient::through(cfg.ca_file.as_deref(), proxy.as_deref())?;
    for r in &registries {
        let answered = check_registry(&client, r, proxy.is_some()).await;
        let ok = answered.ok;
        findings.push(answered);
        if ok {
            findings.push(check_reach(&client, r, proxy.as_deref(), cfg.reachable()?).await);
        }
    }
    for peer in &cfg.peers {
        findings.extend(check_peer(peer, tcp_port, proxy.as_deref()).await);
    }
    if findings.is_empty() {
        println!("  nothing to check: no registry, peer or proxy is configured (mDNS finds boxes on this LAN)");
    }
    for f in &findings {
        println!("  {} {}", f.label(), f.line);
    }
    let advice: Vec<&String> = findings.iter().filter_map(|f| f.advice.as_ref()).collect();
    if advice.is_empty() {
        println!("Everything configured is reachable.");
        return Ok(());
    }
    println!("To open in the firewall (or what to set):");
    for a in advice {
        println!("  - {a}");
    }
    if findings.iter().any(|f| !f.ok) {
        anyhow::bail!("this box cannot reach all it needs (see above)");
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn check_proxy(proxy: &str) -> Finding {
    let started = Instant::now();
    match tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(proxy),
    )
    .await
    {
        Ok(Ok(_)) => Finding {
            ok: true,
            line: format!("proxy {proxy}: answers ({})", ms(started.elapsed())),
            advice: None,
        },
        Ok(Err(e)) => Finding {
            ok: false,
            line: format!("proxy {proxy}: {e}"),
            advice: Some(format!("TCP to the proxy {proxy}, or fix `proxy`")),
        },
        Err(_) => Finding {
            ok: false,
            line: format!("proxy {proxy}: no answer within 3 s"),
            advice: Some(format!("TCP to the proxy {proxy}, or fix `proxy`")),
        },
    }
}

async fn check_registry(
    client: &cambox_node::client::ApiClient,
    registry: &str,
    proxied: bool,
) -> Finding {
    let url = format!("{}/api/v1/openapi.json", registry.trim_end_matches('/'));
    let via = if proxied { " through the proxy" } else { "" };
    let started = Instant::now();
    match client.get_whole(&url).await {
        Ok((200, _)) => Finding {
            ok: true,
            line: format!(
                "registry {registry}: answers{via} ({})",
                ms(started.elapsed())
            ),
            advice: None,
        },
        Ok((status, _)) => Finding {
            ok: false,
            line: format!("registry {registry}: answered {status}{via}: is it a cambox registry?"),
            advice: Some(format!("check the URL of registry {registry}")),
        },
        Err(e) => Finding {
            ok: false,
            line: format!("registry {registry}{via}: {e}"),
            advice: Some(if proxied {
                format!(
                    "CONNECT through the proxy to {registry} (proxies often allow port 443 only)"
                )
            } else {
                format!("TCP to {registry}, or set `proxy` if this network leaves only through one")
            }),
        },
    }
}

/// From where other sites can dial this box: the address the registry sees against the
/// one the box has on its way there (as the box's own registration compares them).
async fn check_reach(
    client: &cambox_node::client::ApiClient,
    registry: &str,
    proxy: Option<&str>,
    reachable: registry_client::Reachable,
) -> Finding {
    let url = format!("{}/api/v1/address", registry.trim_end_matches('/'));
    let seen = match client.get_whole(&url).await {
        Ok((200, body)) => serde_json::from_slice::<SeenAddress>(&body).ok(),
        _ => None,
    };
    let own = registry_client::own_ip_toward(registry, proxy).await;
    let line = match (seen, own) {
        (None, _) => format!(
            "reach: registry {registry} cannot tell where this box is seen from (an older \
             registry?)"
        ),
        (Some(seen), own) => {
            let own = own.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
            let behind = seen.address != own || proxy.is_some();
            match (reachable, behind) {
                (registry_client::Reachable::Site, _) => format!(
                    "reach: set to its own site only: boxes of other sites wait for it to dial \
                     them (registry {registry} sees {}, it is {own} here)",
                    seen.address
                ),
                (registry_client::Reachable::Anywhere, _) => format!(
                    "reach: set to anywhere: boxes of other sites dial {} (forward the mesh's \
                     UDP and TCP ports to this box)",
                    seen.address
                ),
                (_, true) => format!(
                    "reach: registry {registry} sees {}, this box is {own}: behind NAT or a \
                     proxy, it dials the boxes of other sites and they never dial it",
                    seen.address
                ),
                (_, false) => format!(
                    "reach: registry {registry} sees this box at its own address {own}: boxes \
                     of other sites dial it here"
                ),
            }
        }
    };
    Finding {
        ok: true,
        line,
        advice: None,
    }
}

/// A static peer by QUIC over UDP and by TCP at the mesh's TCP port.
async fn check_peer(peer: &str, tcp_port: u16, proxy: Option<&str>) -> Vec<Finding> {
    let host = peer.strip_prefix("tcp://").unwrap_or(peer);
    let addrs: Vec<SocketAddr> = match tokio::net::lookup_host(host).await {
        Ok(a) => a.collect(),
        Err(e) => {
            return vec![Finding {
                ok: false,
                line: format!("peer {peer}: cannot resolve: {e}"),
                advice: Some(format!("DNS for {host}, or give the peer by address")),
            }]
        }
    };
    let Some(&addr) = addrs.first() else {
        return Vec::new();
    };
    let tcp_addr = if peer.starts_with("tcp://") {
        addr
    } else {
        SocketAddr::new(addr.ip(), tcp_port)
    };
    let udp = if peer.starts_with("tcp://") {
        None
    } else {
        Some(probe::over_udp(addr).await)
    };
    let tcp = probe::over_tcp(tcp_addr, proxy).await;
    let via = if proxy.is_some() {
        " through the proxy"
    } else {
        ""
    };
    let mut out = Vec::new();
    let tcp_ok = tcp.is_ok();
    if let Some(udp) = udp {
        out.push(match udp {
            Ok(a) => Finding {
                ok: true,
                line: format!(
                    "peer {peer}: QUIC over UDP {addr}: node {} answers ({})",
                    a.node.short(),
                    ms(a.took)
                ),
                advice: None,
            },
            Err(e) => Finding {
                // Not a failure while TCP gets through: links then run over TCP.
                ok: tcp_ok,
                line: format!("peer {peer}: QUIC over UDP {addr}: {e}"),
                advice: Some(format!(
                    "UDP {} to {} for QUIC (without it links to this peer run over TCP {tcp_port})",
                    addr.port(),
                    addr.ip()
                )),
            },
        });
    }
    out.push(match tcp {
        Ok(a) => Finding {
            ok: true,
            line: format!(
                "peer {peer}: QUIC over TCP {tcp_addr}{via}: node {} answers ({})",
                a.node.short(),
                ms(a.took)
            ),
            advice: None,
        },
        Err(e) => Finding {
            ok: out.iter().any(|f| f.ok),
            line: format!("peer {peer}: QUIC over TCP {tcp_addr}{via}: {e}"),
            advice: Some(format!(
                "TCP {} to {}{} as a way through when UDP is dropped",
                tcp_addr.port(),
                tcp_addr.ip(),
                if proxy.is_some() {
                    " (CONNECT through the proxy)"
                } else {
                    ""
                }
            )),
        },
    });
    out
}
