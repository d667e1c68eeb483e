//! One configuration for `cambox run`: a TOML file, `CAMBOX_*` environment variables and
//! command-line flags, in rising order of precedence. The same struct is the flag parser
//! and the file schema, so every flag is a config key and the other way round.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cambox_media::encode::EncoderChoice;
use cambox_media::source::spec::AudioSpec;
use cambox_media::{FrameRate, SourceSpec, VideoFormat};
use cambox_node::mesh::MeshSettings;
use cambox_node::BoxSettings;
use serde::Deserialize;

pub const DEFAULT_HTTP: &str = "0.0.0.0:8080";
pub const DEFAULT_HTTPS_PORT: u16 = 8443;
/// What company firewalls let out where they let out nothing else.
pub const DEFAULT_MESH_TCP_PORT: u16 = 443;
pub const DEFAULT_WEBRTC_PORT: u16 = cambox_node::whep::ports::DEFAULT_PORT;
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4433";

#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// TOML file with any of these options as keys (e.g. `name = "hall"`).
    #[arg(long, env = "CAMBOX_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Web page, API and live streams listen here [default: 0.0.0.0:8080].
    #[arg(long, env = "CAMBOX_HTTP", value_name = "ADDR")]
    pub http: Option<SocketAddr>,

    /// Once the company CA has certified this box for HTTPS (at enrolment), the page, API
    /// and WHEP are served over TLS here, and the HTTP address redirects to it; `off` to
    /// serve plain HTTP only (behind a proxy that speaks TLS, say)
    /// [default: the HTTP address with port 8443].
    #[arg(long, env = "CAMBOX_HTTPS", value_name = "ADDR|off")]
    pub https: Option<String>,

    /// RTSP server for players and NVRs (rtsp://box:8554/<stream>); `off` to serve none
    /// [default: 0.0.0.0:8554, skipped with a warning when that port is taken].
    #[arg(long, env = "CAMBOX_RTSP", value_name = "ADDR|off")]
    pub rtsp: Option<String>,

    /// Mesh links over TCP, for networks that drop UDP between sites: other boxes dial
    /// here when QUIC cannot reach this box (`--peer tcp://HOST:PORT`); `off` for none
    /// [default: 0.0.0.0:443, skipped with a warning when that cannot be had].
    #[arg(long, env = "CAMBOX_MESH_TCP", value_name = "ADDR|off")]
    pub mesh_tcp: Option<String>,

    /// An HTTP proxy that mesh links over TCP go out through (CONNECT), for a network
    /// that lets boxes out only that way: `http://proxy.example.com:3128`.
    #[arg(long, env = "CAMBOX_PROXY", value_name = "URL")]
    pub proxy: Option<String>,

    /// From where other sites can dial this box: `auto` (registries compare the address
    /// it has with the one its registrations come from, and so find a NAT or a proxy),
    /// `anywhere` (a NAT forwards the mesh ports to it: its outside address stands), or
    /// `site` (a firewall lets nothing in). A box reached from its site only dials out,
    /// and nobody outside dials it [default: auto].
    #[arg(long, env = "CAMBOX_REACHABLE", value_name = "auto|anywhere|site")]
    pub reachable: Option<String>,

    /// WebRTC media of every viewer on this UDP port (one socket per address of the box)
    /// [default: 8189, or one the kernel picks when 8189 is taken].
    #[arg(long, env = "CAMBOX_WEBRTC_UDP", value_name = "PORT")]
    pub webrtc_udp: Option<u16>,

    /// ICE over TCP, for viewers whose network lets only TCP out; `off` for none
    /// [default: 0.0.0.0:8189, or a port the kernel picks when that is taken].
    #[arg(long, env = "CAMBOX_WEBRTC_TCP", value_name = "ADDR|off")]
    pub webrtc_tcp: Option<String>,

    /// Go live at start instead of waiting for the button or `POST /api/v1/live`.
    #[arg(long, env = "CAMBOX_LIVE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub live: Option<bool>,

    /// The stream's name, played at /live/<NAME>.mp4 [default: the host name].
    #[arg(long, env = "CAMBOX_NAME")]
    pub name: Option<String>,

    /// This box's name on the network [default: the host name].
    #[arg(long, env = "CAMBOX_NODE")]
    pub node: Option<String>,

    /// The site (office, building) this box is at [default: local].
    #[arg(long, env = "CAMBOX_SITE")]
    pub site: Option<String>,

    /// Video: auto, testsrc, testsrc:grain, file:PATH, - (stdin), v4l2:/dev/videoN,
    /// libcamera[:ID], none
    /// [default: auto = a camera if found, else testsrc]. Files may be H.264 Annex-B
    /// (passed through) or Y4M (encoded).
    #[arg(long, env = "CAMBOX_SOURCE", value_name = "SOURCE")]
    pub source: Option<String>,

    /// Sound: auto, tone, none, alsa[:DEVICE] [default: auto = microphone with a camera,
    /// test tone otherwise].
    #[arg(long, env = "CAMBOX_AUDIO", value_name = "AUDIO")]
    pub audio: Option<String>,

    /// Start a file source again at its end.
    #[arg(long = "loop", env = "CAMBOX_LOOP", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(rename = "loop")]
    pub looping: Option<bool>,

    /// Picture width in pixels [default: 1280].
    #[arg(long, env = "CAMBOX_WIDTH")]
    pub width: Option<u32>,

    /// Picture height in pixels [default: 720].
    #[arg(long, env = "CAMBOX_HEIGHT")]
    pub height: Option<u32>,

    /// Frames per second [default: 30].
    #[arg(long, env = "CAMBOX_FPS")]
    pub fps: Option<u32>,

    /// Video encoder: auto (hardware if present), openh264, v4l2m2m[:/dev/videoN] [default: auto].
    #[arg(long, env = "CAMBOX_ENCODER")]
    pub encoder: Option<String>,

    /// Video bitrate in bits/s; k and M suffixes allowed [default: 2M].
    #[arg(long, env = "CAMBOX_BITRATE", value_parser = parse_bitrate)]
    #[serde(default, deserialize_with = "bitrate_from_toml")]
    pub bitrate: Option<u32>,

    /// Seconds between keyframes: a new viewer starts at most this late [default: 1].
    #[arg(long, env = "CAMBOX_KEYFRAME_INTERVAL", value_name = "SECONDS")]
    pub keyframe_interval: Option<f64>,

    /// Opus bitrate in bits/s [default: 64k].
    #[arg(long, env = "CAMBOX_AUDIO_BITRATE", value_parser = parse_bitrate)]
    #[serde(default, deserialize_with = "bitrate_from_toml")]
    pub audio_bitrate: Option<u32>,

    /// The mesh: QUIC (UDP) address other boxes connect to [default: 0.0.0.0:4433].
    #[arg(long, env = "CAMBOX_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// A box at another site to connect to, HOST:PORT (repeatable; in the file:
    /// `peers = ["hq.example.com:4433"]`). Boxes on the same LAN find each other by mDNS.
    #[arg(
        long = "peer",
        env = "CAMBOX_PEERS",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub peers: Vec<String>,

    /// A registry to announce this box at and find boxes of other sites through
    /// (repeatable; in the file: `registry = ["http://registry.example.com:8090"]`; a box
    /// serving one: `http://box:8080/registry`).
    #[arg(
        long = "registry",
        env = "CAMBOX_REGISTRY",
        value_delimiter = ',',
        value_name = "URL"
    )]
    #[serde(default)]
    pub registry: Vec<String>,

    /// PEM certificates to trust for https:// registries besides the built-in public
    /// roots (a company's own CA).
    #[arg(long, env = "CAMBOX_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// The token the registries ask for, if any.
    #[arg(long, env = "CAMBOX_REGISTRY_TOKEN", value_name = "TOKEN")]
    pub registry_token: Option<String>,

    /// Also serve a registry, at /registry on this box's HTTP address [default: false].
    #[arg(long, env = "CAMBOX_SERVE_REGISTRY", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub serve_registry: Option<bool>,

    /// Advertise and look for boxes on the LAN by mDNS (`_cambox._udp`) [default: true].
    #[arg(long, env = "CAMBOX_MDNS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub mdns: Option<bool>,

    /// The node key file (Ed25519; made on first start; the node id is its public key)
    /// [default: $STATE_DIRECTORY/node.key, else ~/.local/state/cambox/node.key].
    #[arg(long, env = "CAMBOX_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,

    /// The company CA's certificate (ca.crt of `cambox ca init`): only boxes it enrolled
    /// join this box's mesh. Without it (and without a join token) the mesh is a lab that
    /// any box speaking the protocol joins, and the page says so.
    #[arg(long, env = "CAMBOX_MESH_CA", value_name = "PATH")]
    pub mesh_ca: Option<PathBuf>,

    /// This box's node certificate from the CA (`cambox ca sign`, or fetched at start with
    /// a join token) [default: node.crt beside the node key].
    #[arg(long, env = "CAMBOX_NODE_CERT", value_name = "PATH")]
    pub node_cert: Option<PathBuf>,

    /// A join token (`cambox ca token`): at start, a box without a valid node certificate
    /// gets one from its registries, with the CA's certificate, and joins the company mesh.
    #[arg(long, env = "CAMBOX_JOIN_TOKEN", value_name = "TOKEN")]
    pub join_token: Option<String>,

    /// Local accounts (`cambox user add`): with any, or with single sign-on, people must
    /// log in to watch [default: users.toml beside the node key].
    #[arg(long, env = "CAMBOX_USERS", value_name = "PATH")]
    pub users: Option<PathBuf>,

    /// The company's OpenID Connect provider (issuer URL) for single sign-on.
    #[arg(long, env = "CAMBOX_OIDC_ISSUER", value_name = "URL")]
    pub oidc_issuer: Option<String>,

    /// This box's client id at the OpenID provider (its redirect URI is
    /// http://<box>/auth/callback).
    #[arg(long, env = "CAMBOX_OIDC_CLIENT_ID", value_name = "ID")]
    pub oidc_client_id: Option<String>,

    /// The client secret, for a confidential client (none: a public client with PKCE).
    #[arg(long, env = "CAMBOX_OIDC_CLIENT_SECRET", value_name = "SECRET")]
    pub oidc_client_secret: Option<String>,

    /// The ID token claim that lists a person's groups [default: groups].
    #[arg(long, env = "CAMBOX_OIDC_GROUPS_CLAIM", value_name = "CLAIM")]
    pub oidc_groups_claim: Option<String>,

    /// Members of this group (in that claim) are operators: they go live, press the
    /// button, command and chat. Everybody else who logs in by single sign-on watches.
    #[arg(long, env = "CAMBOX_OIDC_OPERATORS", value_name = "GROUP")]
    pub oidc_operators: Option<String>,

    /// Who may watch this box's stream: `*` (everybody who logs in), `site:NAME` (people
    /// served by a box of that site), `group:NAME` (from the login's groups), `user:NAME`
    /// (repeatable; any one suffices) [default: watch_default].
    #[arg(
        long = "watch",
        env = "CAMBOX_WATCH",
        value_delimiter = ',',
        value_name = "RULE"
    )]
    #[serde(default)]
    pub watch: Vec<String>,

    /// Who may watch a stream whose box names nobody: the mesh-wide default, the same on
    /// every card [default: *].
    #[arg(
        long = "watch-default",
        env = "CAMBOX_WATCH_DEFAULT",
        value_delimiter = ',',
        value_name = "RULE"
    )]
    #[serde(default)]
    pub watch_default: Vec<String>,

    /// The audit log: who watched which stream from when to when, and who pressed what
    /// (`cambox audit` reads it) [default: audit.log beside the node key].
    #[arg(long, env = "CAMBOX_AUDIT", value_name = "PATH")]
    pub audit: Option<PathBuf>,

    /// How long the audit log keeps a record, e.g. 48h or 7d (at most 31d) [default: 48h].
    #[arg(long, env = "CAMBOX_AUDIT_MAX_AGE", value_name = "DURATION")]
    pub audit_max_age: Option<String>,

    /// The release keys whose bundles this box checks, passes on and installs
    /// [default: /etc/cambox/release.pub, which the image carries].
    #[arg(long, env = "CAMBOX_RELEASE_KEYS", value_name = "FILE")]
    pub release_keys: Option<PathBuf>,

    /// What this box runs, `board=` and `version=` lines [default: /etc/cambox/release,
    /// which the image carries; elsewhere the box only passes updates on].
    #[arg(long, env = "CAMBOX_RELEASE_FILE", value_name = "FILE")]
    pub release_file: Option<PathBuf>,

    /// After an update, how long the new version has to reach a neighbour or a registry
    /// before the box gives it up and boots the old one again [default: 180s].
    #[arg(long, env = "CAMBOX_UPDATE_HEALTH", value_name = "DURATION")]
    pub update_health: Option<String>,

    /// The audit log's size limit, MiB [default: 4].
    #[arg(long, env = "CAMBOX_AUDIT_MAX_MIB", value_name = "MIB")]
    pub audit_max_mib: Option<u32>,

    /// Upload budget for relaying to other boxes, bits/s; k and M allowed [default: 20M].
    #[arg(long, env = "CAMBOX_UPLINK", value_parser = parse_bitrate)]
    #[serde(default, deserialize_with = "bitrate_from_toml")]
    pub uplink: Option<u32>,

    /// The button and status LED: simulated (pressed through the page and
    /// POST /api/v1/button) or gpio (a Raspberry Pi's header; needs the rpi build)
    /// [default: simulated].
    #[arg(long, env = "CAMBOX_BOARD", value_name = "simulated|gpio")]
    pub board: Option<String>,

    /// GPIO (BCM number) of the button, wired to ground [default: 17].
    #[arg(long, env = "CAMBOX_BUTTON_PIN", value_name = "N")]
    pub button_pin: Option<u8>,

    /// GPIO (BCM number) of the status LED, through a resistor to ground [default: 27].
    #[arg(long, env = "CAMBOX_LED_PIN", value_name = "N")]
    pub led_pin: Option<u8>,

    /// A node (hex id, as `cambox sensors` shows) allowed to command this box over the
    /// mesh (go live, LED, actuators); repeatable; `*` allows every node [default: none].
    #[arg(
        long = "allow-commands",
        env = "CAMBOX_ALLOW_COMMANDS",
        value_delimiter = ',',
        value_name = "NODE_ID"
    )]
    #[serde(default)]
    pub allow_commands: Vec<String>,

    /// A sensor to publish: name=temp,unit=C[,min=..,max=..,every=SECONDS],file=PATH or
    /// ...,cmd=COMMAND (cmd last; it may hold commas). Repeatable; in the file: [[sensor]].
    #[arg(long = "sensor", value_name = "SPEC", value_parser = cambox_node::bus::sensors::SensorSpec::parse)]
    #[serde(default)]
    pub sensor: Vec<cambox_node::bus::sensors::SensorSpec>,

    /// An actuator: name=relay,cmd=COMMAND; `cambox cmd NODE actuator:relay set on` runs
    /// COMMAND with CAMBOX_VALUE=on. Repeatable; in the file: [[actuator]].
    #[arg(long = "actuator", value_name = "SPEC", value_parser = cambox_node::bus::sensors::ActuatorSpec::parse)]
    #[serde(default)]
    pub actuator: Vec<cambox_node::bus::sensors::ActuatorSpec>,

    /// Wi-Fi for the SD image's network setup (`[wifi]` in the file only; `cambox run`
    /// itself ignores it, `cambox import-config` turns it into wpa_supplicant's).
    #[arg(skip)]
    #[serde(default)]
    pub wifi: Option<WifiConfig>,
}

/// `[wifi]` in `cambox.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WifiConfig {
    pub ssid: String,
    /// The passphrase (8 to 63 characters) or the 64-hex-digit key; absent for an open
    /// network.
    pub psk: Option<String>,
    /// Two-letter country code for the radio's regulatory rules (e.g. "DE").
    pub country: Option<String>,
}

/// `2000000`, `2000k`, `2M`, `2.5M`.
pub fn parse_bitrate(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1e3),
        Some('m' | 'M') => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a bitrate; write e.g. 2M, 800k or 64000"))?;
    let bps = v * mult;
    if !(1000.0..=100e6).contains(&bps) {
        return Err(format!("bitrate {s} is out of range (1k to 100M)"));
    }
    Ok(bps as u32)
}

fn bitrate_from_toml<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => parse_bitrate(&n.to_string()).map(Some),
        Raw::S(s) => parse_bitrate(&s).map(Some),
    }
    .map_err(serde::de::Error::custom)
}

/// Reads a config file; unknown keys and wrong types are errors naming the key and file.
pub fn load_file(path: &Path) -> anyhow::Result<RunConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e))
}

impl RunConfig {
    /// Fills every option not given on the command line or environment from `file`.
    pub fn under(self, file: RunConfig) -> RunConfig {
        RunConfig {
            config: self.config,
            http: self.http.or(file.http),
            https: self.https.or(file.https),
            rtsp: self.rtsp.or(file.rtsp),
            webrtc_udp: self.webrtc_udp.or(file.webrtc_udp),
            mesh_tcp: self.mesh_tcp.or(file.mesh_tcp),
            proxy: self.proxy.or(file.proxy),
            reachable: self.reachable.or(file.reachable),
            webrtc_tcp: self.webrtc_tcp.or(file.webrtc_tcp),
            live: self.live.or(file.live),
            name: self.name.or(file.name),
            node: self.node.or(file.node),
            site: self.site.or(file.site),
            source: self.source.or(file.source),
            audio: self.audio.or(file.audio),
            looping: self.looping.or(file.looping),
            width: self.width.or(file.width),
            height: self.height.or(file.height),
            fps: self.fps.or(file.fps),
            encoder: self.encoder.or(file.encoder),
            bitrate: self.bitrate.or(file.bitrate),
            keyframe_interval: self.keyframe_interval.or(file.keyframe_interval),
            audio_bitrate: self.audio_bitrate.or(file.audio_bitrate),
            listen: self.listen.or(file.listen),
            peers: if self.peers.is_empty() {
                file.peers
            } else {
                self.peers
            },
            mdns: self.mdns.or(file.mdns),
            registry: if self.registry.is_empty() {
                file.registry
            } else {
                self.registry
            },
            registry_token: self.registry_token.or(file.registry_token),
            ca_file: self.ca_file.or(file.ca_file),
            serve_registry: self.serve_registry.or(file.serve_registry),
            key: self.key.or(file.key),
            mesh_ca: self.mesh_ca.or(file.mesh_ca),
            node_cert: self.node_cert.or(file.node_cert),
            join_token: self.join_token.or(file.join_token),
            users: self.users.or(file.users),
            oidc_issuer: self.oidc_issuer.or(file.oidc_issuer),
            oidc_client_id: self.oidc_client_id.or(file.oidc_client_id),
            oidc_client_secret: self.oidc_client_secret.or(file.oidc_client_secret),
            oidc_groups_claim: self.oidc_groups_claim.or(file.oidc_groups_claim),
            oidc_operators: self.oidc_operators.or(file.oidc_operators),
            watch: if self.watch.is_empty() {
                file.watch
            } else {
                self.watch
            },
            watch_default: if self.watch_default.is_empty() {
                file.watch_default
            } else {
                self.watch_default
            },
            audit: self.audit.or(file.audit),
            audit_max_age: self.audit_max_age.or(file.audit_max_age),
            update_health: self.update_health.or(file.update_health),
            release_keys: self.release_keys.or(file.release_keys),
            release_file: self.release_file.or(file.release_file),
            audit_max_mib: self.audit_max_mib.or(file.audit_max_mib),
            uplink: self.uplink.or(file.uplink),
            board: self.board.or(file.board),
            button_pin: self.button_pin.or(file.button_pin),
            led_pin: self.led_pin.or(file.led_pin),
            wifi: self.wifi.or(file.wifi),
            allow_commands: if self.allow_commands.is_empty() {
                file.allow_commands
            } else {
                self.allow_commands
            },
            sensor: if self.sensor.is_empty() {
                file.sensor
            } else {
                self.sensor
            },
            actuator: if self.actuator.is_empty() {
                file.actuator
            } else {
                self.actuator
            },
        }
    }

    /// Merges the config file (if any) under the flags.
    pub fn with_file(self) -> anyhow::Result<RunConfig> {
        match self.config.clone() {
            Some(path) => Ok(self.under(load_file(&path)?)),
            None => Ok(self),
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.unwrap_or_else(|| {
            DEFAULT_HTTP
                .parse()
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8080)))
        })
    }

    /// Where HTTPS listens once the box has a certificate; None when off.
    pub fn https_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.https.as_deref().map(str::trim) {
            None => Ok(Some(SocketAddr::new(
                self.http_addr().ip(),
                DEFAULT_HTTPS_PORT,
            ))),
            Some("off") => Ok(None),
            Some(a) => a.parse().map(Some).map_err(|_| {
                anyhow::anyhow!("--https '{a}' is not an address like 0.0.0.0:8443 (or 'off')")
            }),
        }
    }

    /// Where mesh links over TCP are taken: None when off, or when the default (port 443)
    /// cannot be had (a second box on one machine, or no right to low ports).
    pub fn mesh_tcp_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        match self.mesh_tcp.as_deref().map(str::trim) {
            None => {
                let default = SocketAddr::from(([0, 0, 0, 0], DEFAULT_MESH_TCP_PORT));
                match std::net::TcpListener::bind(default) {
                    Ok(_) => Ok(Some(default)),
                    Err(e) => {
                        eprintln!("cambox: no mesh links over TCP: cannot listen on {default}: {e} (set mesh_tcp)");
                        Ok(None)
                    }
                }
            }
            Some("off") => Ok(None),
            Some(a) => a.parse().map(Some).map_err(|_| {
                anyhow::anyhow!("--mesh-tcp '{a}' is not an address like 0.0.0.0:443 (or 'off')")
            }),
        }
    }

    /// The port of the mesh's TCP links, the same on every box (443 unless `mesh_tcp` says).
    pub fn mesh_tcp_port(&self) -> anyhow::Result<u16> {
        match self.mesh_tcp.as_deref().map(str::trim) {
            None | Some("off") => Ok(DEFAULT_MESH_TCP_PORT),
            Some(a) => a.parse::<SocketAddr>().map(|a| a.port()).map_err(|_| {
                anyhow::anyhow!("--mesh-tcp '{a}' is not an address like 0.0.0.0:443 (or 'off')")
            }),
        }
    }

    /// `update_health`, checked.
    pub fn update_health(&self) -> anyhow::Result<std::time::Duration> {
        match &self.update_health {
            None => Ok(cambox_node::update::DEFAULT_HEALTH_BOUND),
            Some(d) => crate::duration::parse_duration(d)
                .map_err(|e| anyhow::anyhow!("--update-health: {e}")),
        }
    }

    /// `reachable`, checked.
    pub fn reachable(&self) -> anyhow::Result<cambox_node::registry_client::Reachable> {
        match &self.reachable {
            None => Ok(Default::default()),
            Some(r) => r.parse().map_err(|e| anyhow::anyhow!("--{e}")),
        }
    }

    /// The proxy's HOST:PORT, checked.
    pub fn proxy_addr(&self) -> anyhow::Result<Option<String>> {
        let Some(url) = self.proxy.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let bad = || {
            anyhow::anyhow!(
                "--proxy '{url}' is not an HTTP proxy URL like http://proxy.example.com:3128"
            )
        };
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let host_port = rest.trim_end_matches('/');
        match host_port.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok() =>
            {
                Ok(Some(host_port.to_owned()))
            }
            _ => Err(bad()),
        }
    }

    /// The WebRTC UDP port and ICE-TCP address (None: off); `required` is false for the
    /// defaults, which a second box on one machine finds taken.
    pub fn webrtc_ports(&self) -> anyhow::Result<(u16, Option<SocketAddr>, bool)> {
        let udp = self.webrtc_udp.unwrap_or(DEFAULT_WEBRTC_PORT);
        let tcp = match self.webrtc_tcp.as_deref().map(str::trim) {
            None => Some(SocketAddr::from(([0, 0, 0, 0], DEFAULT_WEBRTC_PORT))),
            Some("off") => None,
            Some(a) => Some(a.parse().map_err(|_| {
                anyhow::anyhow!("--webrtc-tcp '{a}' is not an address like 0.0.0.0:8189 (or 'off')")
            })?),
        };
        let required = self.webrtc_udp.is_some() || self.webrtc_tcp.is_some();
        Ok((udp, tcp, required))
    }

    /// Where RTSP listens: None when off; `required` is false for the default address,
    /// which a second box on one machine may find taken.
    pub fn rtsp_addr(&self) -> anyhow::Result<Option<(SocketAddr, bool)>> {
        match self.rtsp.as_deref().map(str::trim) {
            None => Ok(Some((
                SocketAddr::from(([0, 0, 0, 0], cambox_node::rtsp::DEFAULT_PORT)),
                false,
            ))),
            Some("off") | Some("") => Ok(None),
            Some(a) => a.parse().map(|a| Some((a, true))).map_err(|_| {
                anyhow::anyhow!("--rtsp '{a}' is not an address like 0.0.0.0:8554 (or 'off')")
            }),
        }
    }

    /// How the box joins the mesh.
    pub fn mesh_settings(&self, box_settings: &BoxSettings) -> anyhow::Result<MeshSettings> {
        for p in &self.peers {
            let ok = p
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                anyhow::bail!(
                    "--peer '{p}' is not HOST:PORT (e.g. 10.1.2.3:4433 or box.example.com:4433)"
                );
            }
        }
        Ok(MeshSettings {
            listen: self.listen.unwrap_or_else(|| {
                DEFAULT_LISTEN
                    .parse()
                    .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 4433)))
            }),
            peers: self.peers.clone(),
            site: box_settings.site.clone(),
            node_name: box_settings.node.clone(),
            mdns: self.mdns.unwrap_or(true),
            uplink_kbps: self.uplink.unwrap_or(20_000_000) / 1000,
            command_allow: self.command_allow()?,
            rtsp_port: None,
            trust: None,
            watch: box_settings.watch.clone(),
            watchers: Default::default(),
            tcp_listen: self.mesh_tcp_addr()?,
            proxy: self.proxy_addr()?,
            updates: None,
        })
    }

    /// Who may command this box: `*`, or node ids in hex.
    pub fn command_allow(&self) -> anyhow::Result<cambox_mesh::routed::CommandAllow> {
        use cambox_mesh::routed::CommandAllow;
        if self.allow_commands.is_empty() {
            return Ok(CommandAllow::Nobody);
        }
        if self.allow_commands.iter().any(|a| a == "*") {
            return Ok(CommandAllow::Anyone);
        }
        let ids = self
            .allow_commands
            .iter()
            .map(|a| {
                cambox_mesh::NodeId::from_hex(a.trim()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--allow-commands '{a}' is not a node id (64 hex digits, as \
                         `cambox sensors` shows) or *"
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(CommandAllow::Only(ids))
    }

    /// Sensors and actuators, checked (those from the file are checked here too).
    pub fn bus_devices(
        &self,
    ) -> anyhow::Result<(
        Vec<cambox_node::bus::sensors::SensorSpec>,
        Vec<cambox_node::bus::sensors::ActuatorSpec>,
    )> {
        let mut names = std::collections::HashSet::new();
        for s in &self.sensor {
            s.check().map_err(|e| anyhow::anyhow!(e))?;
            if !names.insert(("sensor", s.name.clone())) {
                anyhow::bail!("two sensors are called '{}'", s.name);
            }
        }
        for a in &self.actuator {
            a.check().map_err(|e| anyhow::anyhow!(e))?;
            if !names.insert(("actuator", a.name.clone())) {
                anyhow::bail!("two actuators are called '{}'", a.name);
            }
        }
        Ok((self.sensor.clone(), self.actuator.clone()))
    }

    /// The registries, checked: http:// or https:// URLs.
    pub fn registries(&self) -> anyhow::Result<Vec<String>> {
        for r in &self.registry {
            let rest = r
                .strip_prefix("http://")
                .or_else(|| r.strip_prefix("https://"));
            if rest.is_none_or(str::is_empty) {
                anyhow::bail!(
                    "--registry '{r}' is not a URL like http://registry.example.com:8090 \
                     or https://registry.example.com"
                );
            }
        }
        Ok(self.registry.clone())
    }

    /// The GPIO pins when the board is `gpio`, None for the simulated board.
    pub fn gpio_pins(&self) -> anyhow::Result<Option<cambox_node::board::Pins>> {
        let defaults = cambox_node::board::Pins::default();
        match self.board.as_deref().unwrap_or("simulated") {
            "simulated" => Ok(None),
            "gpio" => {
                let pins = cambox_node::board::Pins {
                    button: self.button_pin.unwrap_or(defaults.button),
                    led: self.led_pin.unwrap_or(defaults.led),
                };
                if pins.button == pins.led || pins.button > 27 || pins.led > 27 {
                    anyhow::bail!(
                        "--button-pin {} and --led-pin {} must be two different GPIOs 0 to 27",
                        pins.button,
                        pins.led
                    );
                }
                Ok(Some(pins))
            }
            other => anyhow::bail!("--board '{other}' is not simulated or gpio"),
        }
    }

    /// Where the node key lives.
    /// The audit log, as configured.
    pub fn audit_log(&self) -> anyhow::Result<cambox_node::audit::AuditLog> {
        let path = self
            .audit
            .clone()
            .unwrap_or_else(|| self.key_path().with_file_name("audit.log"));
        let max_age = match &self.audit_max_age {
            Some(a) => crate::duration::parse_duration(a)
                .map_err(|e| anyhow::anyhow!("audit_max_age: {e}"))?,
            None => cambox_node::audit::DEFAULT_MAX_AGE,
        };
        let max_bytes = self
            .audit_max_mib
            .map_or(cambox_node::audit::DEFAULT_MAX_BYTES, |m| {
                u64::from(m.max(1)) << 20
            });
        Ok(cambox_node::audit::AuditLog::new(path, max_bytes, max_age))
    }

    /// The local accounts' file: as given, else beside the node key.
    pub fn users_path(&self) -> PathBuf {
        self.users
            .clone()
            .unwrap_or_else(|| self.key_path().with_file_name("users.toml"))
    }

    /// Single sign-on, if an issuer is given (then a client id is needed too).
    pub fn oidc(&self) -> anyhow::Result<Option<cambox_node::auth::oidc::OidcSettings>> {
        let Some(issuer) = &self.oidc_issuer else {
            return Ok(None);
        };
        if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
            anyhow::bail!("oidc_issuer '{issuer}' is not an http(s) URL");
        }
        let client_id = self.oidc_client_id.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "oidc_issuer is set but oidc_client_id is not: register the box at the provider"
            )
        })?;
        Ok(Some(cambox_node::auth::oidc::OidcSettings {
            issuer: issuer.clone(),
            client_id,
            client_secret: self.oidc_client_secret.clone(),
            groups_claim: self
                .oidc_groups_claim
                .clone()
                .unwrap_or_else(|| "groups".into()),
            operators_group: self.oidc_operators.clone(),
        }))
    }

    /// The node certificate's file: as given, else beside the node key.
    pub fn node_cert_path(&self) -> PathBuf {
        self.node_cert
            .clone()
            .unwrap_or_else(|| self.key_path().with_file_name("node.crt"))
    }

    pub fn key_path(&self) -> PathBuf {
        if let Some(k) = &self.key {
            return k.clone();
        }
        let dir = std::env::var_os("STATE_DIRECTORY")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/cambox"))
            })
            .unwrap_or_else(|| PathBuf::from("."));
        dir.join("node.key")
    }

    /// Resolves defaults and checks every value.
    pub fn settings(&self) -> anyhow::Result<BoxSettings> {
        let host = hostname();
        let stream = self.name.clone().unwrap_or_else(|| host.clone());
        check_name(&stream)?;
        let source: SourceSpec = self
            .source
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .context("--source")?;
        let audio: AudioSpec = self
            .audio
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .context("--audio")?;
        let encoder: EncoderChoice = self
            .encoder
            .as_deref()
            .unwrap_or("auto")
            .parse()
            .context("--encoder")?;
        let (width, height) = (self.width.unwrap_or(1280), self.height.unwrap_or(720));
        if !(48..=4096).contains(&width)
            || !(32..=4096).contains(&height)
            || width % 2 == 1
            || height % 2 == 1
        {
            anyhow::bail!("picture size {width}x{height} is not usable: width 48-4096 and height 32-4096, both even");
        }
        let fps = self.fps.unwrap_or(30);
        if !(1..=120).contains(&fps) {
            anyhow::bail!("--fps {fps} is out of range (1-120)");
        }
        let keyframe_interval = self.keyframe_interval.unwrap_or(1.0);
        if !(0.1..=10.0).contains(&keyframe_interval) {
            anyhow::bail!("--keyframe-interval {keyframe_interval} is out of range (0.1-10 s)");
        }
        Ok(BoxSettings {
            node: self.node.clone().unwrap_or(host),
            stream,
            site: self.site.clone().unwrap_or_else(|| "local".into()),
            source,
            audio,
            looping: self.looping.unwrap_or(false),
            format: VideoFormat {
                width,
                height,
                rate: FrameRate::per_second(fps),
            },
            encoder,
            bitrate: self.bitrate.unwrap_or(2_000_000),
            keyframe_interval,
            audio_bitrate: self.audio_bitrate.unwrap_or(64_000),
            watch: watch_rule(&self.watch, "watch")?,
            watch_default: watch_rule(&self.watch_default, "watch_default")?,
        })
    }
}

/// Rules of who may watch, checked and joined as they travel (`group:ops,site:berlin`).
fn watch_rule(rules: &[String], key: &str) -> anyhow::Result<String> {
    cambox_node::auth::rules::check(rules).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
    Ok(rules.join(","))
}

/// Stream names appear in URLs and mDNS records: keep them to safe characters.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        anyhow::bail!(
            "stream name '{name}' must be 1-63 characters of a-z, A-Z, 0-9, '-', '_', '.'"
        );
    }
    Ok(())
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_' || *c == '.')
        .take(63)
        .collect();
    if clean.is_empty() {
        "cambox".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_names_key_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cambox.toml");
        std::fs::write(&path, "name = \"hall\"\nresolution = \"720p\"\n").unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(err.contains("resolution"), "{err}");
        assert!(err.contains("cambox.toml"), "{err}");
    }

    #[test]
    fn flags_win_over_file_and_defaults_fill_the_rest() {
        let file: RunConfig =
            toml::from_str("name = \"hall\"\nfps = 25\nbitrate = \"1.5M\"\nloop = true\n").unwrap();
        let cli = RunConfig {
            fps: Some(15),
            ..Default::default()
        };
        let s = cli.under(file).settings().unwrap();
        assert_eq!(s.stream, "hall");
        assert_eq!(s.format.rate.num, 15);
        assert_eq!(s.bitrate, 1_500_000);
        assert!(s.looping);
        assert_eq!((s.format.width, s.format.height), (1280, 720));
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(parse_bitrate("fast").is_err());
        assert_eq!(parse_bitrate("800k"), Ok(800_000));
        let bad = RunConfig {
            name: Some("my stream!".into()),
            ..Default::default()
        };
        assert!(bad
            .settings()
            .unwrap_err()
            .to_string()
            .contains("stream name"));
        let bad = RunConfig {
            width: Some(641),
            ..Default::default()
        };
        assert!(bad.settings().is_err());
        assert!(toml::from_str::<RunConfig>("fps = \"fast\"").is_err());
    }

    #[test]
    fn reachable_is_auto_anywhere_or_site() {
        use cambox_node::registry_client::Reachable;
        let reach = |r: Option<&str>| {
            RunConfig {
                reachable: r.map(Into::into),
                ..Default::default()
            }
            .reachable()
        };
        assert_eq!(reach(None).unwrap(), Reachable::Auto);
        assert_eq!(reach(Some("site")).unwrap(), Reachable::Site);
        assert_eq!(reach(Some(" anywhere ")).unwrap(), Reachable::Anywhere);
        let e = reach(Some("outside")).unwrap_err().to_string();
        assert_eq!(e, "--reachable 'outside' is not auto, anywhere or site");
    }

    #[test]
    fn a_proxy_is_an_http_url_with_a_port() {
        let proxy = |url: &str| {
            RunConfig {
                proxy: Some(url.into()),
                ..RunConfig::default()
            }
            .proxy_addr()
        };
        assert_eq!(
            proxy("http://proxy.example.com:3128").unwrap().as_deref(),
            Some("proxy.example.com:3128")
        );
        assert_eq!(
            proxy("http://10.0.0.1:8080/").unwrap().as_deref(),
            Some("10.0.0.1:8080")
        );
        for bad in [
            "proxy:3128",
            "https://proxy:3128",
            "http://proxy",
            "http://:3128",
        ] {
            let e = proxy(bad).unwrap_err().to_string();
            assert!(e.contains("is not an HTTP proxy URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn rtsp_defaults_to_8554_may_be_moved_or_turned_off() {
        let default = RunConfig::default().rtsp_addr().unwrap();
        assert_eq!(default, Some(("0.0.0.0:8554".parse().unwrap(), false)));
        let off: RunConfig = toml::from_str("rtsp = \"off\"").unwrap();
        assert_eq!(off.rtsp_addr().unwrap(), None);
        let moved: RunConfig = toml::from_str("rtsp = \"127.0.0.1:8555\"").unwrap();
        assert_eq!(
            moved.rtsp_addr().unwrap(),
            Some(("127.0.0.1:8555".parse().unwrap(), true))
        );
        let bad: RunConfig = toml::from_str("rtsp = \"8554\"").unwrap();
        let err = bad.rtsp_addr().unwrap_err().to_string();
        assert!(err.contains("0.0.0.0:8554") && err.contains("off"), "{err}");
    }
}
