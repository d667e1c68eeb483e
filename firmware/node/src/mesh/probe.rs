//! Whether a box is reachable, the way the mesh would reach it: a QUIC handshake over UDP,
//! and the same handshake over TCP (directly or through the HTTP proxy). For `cambox
//! doctor`, which tells an administrator what the firewall lets through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cambox_mesh::identity::Identity;
use cambox_mesh::NodeId;

use super::tcp::TcpDatagrams;
use super::tls;

/// A cambox answered: who, and how long the handshake took.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub node: NodeId,
    pub took: Duration,
}

/// A throwaway node key: a probe proves nothing and asks for nothing.
fn client() -> Result<quinn::ClientConfig, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| e.to_string())?;
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        Duration::from_secs(3)
            .try_into()
            .map_err(|e| format!("{e}"))?,
    ));
    tls::quic_configs(&Identity::from_seed(seed), &[], Arc::new(transport))
        .map(|c| c.client)
        .map_err(|e| e.to_string())
}

async fn handshake(endpoint: &quinn::Endpoint, addr: SocketAddr) -> Result<Answer, String> {
    let started = Instant::now();
    let conn = endpoint
        .connect_with(client()?, addr, &tls::server_name_for(None))
        .map_err(|e| e.to_string())?;
    let conn = match tokio::time::timeout(Duration::from_secs(4), conn).await {
        Ok(Ok(c)) => c,
        Ok(Err(quinn::ConnectionError::TimedOut)) | Err(_) => {
            return Err("no answer within 3 s".into())
        }
        Ok(Err(e)) => return Err(e.to_string()),
    };
    let took = started.elapsed();
    let node = tls::peer_certificates(&conn)
        .first()
        .and_then(|c| tls::node_id_of(c))
        .ok_or("the peer presented no node key")?;
    conn.close(0u32.into(), b"probe");
    Ok(Answer { node, took })
}

/// A QUIC handshake with the box at `addr` over UDP.
pub async fn over_udp(addr: SocketAddr) -> Result<Answer, String> {
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().expect("an address")
    } else {
        "0.0.0.0:0".parse().expect("an address")
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| e.to_string())?;
    let answer = handshake(&endpoint, addr).await;
    endpoint.close(0u32.into(), b"probe");
    answer
}

/// The same handshake carried over TCP to `addr`, through `proxy` (HOST:PORT) if given.
pub async fn over_tcp(addr: SocketAddr, proxy: Option<&str>) -> Result<Answer, String> {
    let local: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let datagrams = TcpDatagrams::listen(local, proxy.map(str::to_owned))
        .await
        .map_err(|e| e.to_string())?;
    datagrams.connect(addr).await.map_err(|e| e.to_string())?;
    let endpoint = quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        None,
        datagrams,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| e.to_string())?;
    let answer = handshake(&endpoint, addr).await;
    endpoint.close(0u32.into(), b"probe");
    answer
}
