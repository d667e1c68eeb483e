//! LAN discovery by mDNS: the box advertises `_cambox._udp` with its node id, site,
//! version and live broadcasts in TXT (what `avahi-browse -r _cambox._udp` shows), and
//! hands every box it sees to the driver as a candidate neighbour.

use std::collections::HashMap;
use std::net::SocketAddr;

use cambox_mesh::NodeId;
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::sync::mpsc;

use super::{Input, MeshSettings};

pub const SERVICE: &str = "_cambox._udp.local.";
/// Where RTSP players (VLC, NVRs) look for cameras.
pub const RTSP_SERVICE: &str = "_rtsp._tcp.local.";

pub struct Mdns {
    daemon: ServiceDaemon,
    instance: String,
    host: String,
    ip: Option<std::net::IpAddr>,
    port: u16,
    txt: HashMap<String, String>,
    /// The RTSP server's port, advertised as `_rtsp._tcp` when it serves.
    rtsp_port: Option<u16>,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns")
            .field("instance", &self.instance)
            .finish()
    }
}

impl Mdns {
    pub fn start(
        settings: &MeshSettings,
        id: NodeId,
        port: u16,
        tx: mpsc::UnboundedSender<Input>,
    ) -> Result<Mdns, mdns_sd::Error> {
        let daemon = ServiceDaemon::new()?;
        let host = format!("cambox-{}.local.", id.short());
        let instance = format!("{} ({})", settings.node_name, id.short());
        let mut txt = HashMap::new();
        txt.insert("id".to_string(), id.to_hex());
        txt.insert("site".to_string(), settings.site.clone());
        txt.insert("ver".to_string(), env!("CARGO_PKG_VERSION").to_string());
        txt.insert("live".to_string(), String::new());
        let ip = Some(settings.listen.ip()).filter(|ip| !ip.is_unspecified());
        let mdns = Mdns {
            daemon,
            instance,
            host,
            ip,
            port,
            txt,
            rtsp_port: settings.rtsp_port,
        };
        mdns.daemon.register(mdns.info(&mdns.txt)?)?;
        if let Some(info) = mdns.rtsp_info()? {
            mdns.daemon.register(info)?;
        }
        let browse = mdns.daemon.browse(SERVICE)?;
        let me = id;
        tokio::spawn(async move {
            while let Ok(event) = browse.recv_async().await {
                let ServiceEvent::ServiceResolved(info) = event else {
                    continue;
                };
                let Some(node) = info.get_property_val_str("id").and_then(NodeId::from_hex) else {
                    continue;
                };
                if node == me {
                    continue;
                }
                // One address is enough; prefer IPv4, which every LAN here routes.
                let mut addrs: Vec<_> = info.get_addresses().iter().copied().collect();
                addrs.sort_by_key(|a| !a.is_ipv4());
                if let Some(ip) = addrs.first() {
                    let addr = SocketAddr::new(*ip, info.get_port());
                    tracing::debug!(%node, %addr, "found by mDNS");
                    if tx.send(Input::Discovered { node, addr }).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(mdns)
    }

    fn info(&self, txt: &HashMap<String, String>) -> Result<ServiceInfo, mdns_sd::Error> {
        self.service(SERVICE, self.port, txt)
    }

    /// `_rtsp._tcp` with TXT `path=/<stream>`, so a player can open the box's own stream.
    fn rtsp_info(&self) -> Result<Option<ServiceInfo>, mdns_sd::Error> {
        let Some(port) = self.rtsp_port else {
            return Ok(None);
        };
        let mut txt = HashMap::new();
        txt.insert(
            "id".to_string(),
            self.txt.get("id").cloned().unwrap_or_default(),
        );
        self.service(RTSP_SERVICE, port, &txt).map(Some)
    }

    fn service(
        &self,
        service: &str,
        port: u16,
        txt: &HashMap<String, String>,
    ) -> Result<ServiceInfo, mdns_sd::Error> {
        Ok(match self.ip {
            Some(ip) => {
                ServiceInfo::new(service, &self.instance, &self.host, ip, port, txt.clone())?
            }
            None => ServiceInfo::new(service, &self.instance, &self.host, "", port, txt.clone())?
                .enable_addr_auto(),
        })
    }

    /// Re-announces with the box's live broadcasts in TXT `live=` (comma separated).
    pub fn set_live(&self, names: &[String]) {
        let mut txt = self.txt.clone();
        txt.insert("live".into(), names.join(","));
        if let Ok(info) = self.info(&txt) {
            let _ = self.daemon.register(info);
        }
    }

    pub fn stop(self) {
        if let Ok(info) = self.info(&self.txt) {
            let _ = self.daemon.unregister(info.get_fullname());
        }
        if let Ok(Some(info)) = self.rtsp_info() {
            let _ = self.daemon.unregister(info.get_fullname());
        }
        let _ = self.daemon.shutdown();
    }
}
