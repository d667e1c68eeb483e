//! The overlay as a bus besides video: what a node can do (capabilities), what it reads
//! (telemetry), commands to it, and chat. The formats here are JSON, documented in
//! `docs/protocol.md`; the mesh driver carries them.

pub use cambox_mesh::bus::chat;
pub mod commands;
pub mod sensors;

use serde::{Deserialize, Serialize};

/// The version of the capability and telemetry formats.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Camera,
    Microphone,
    Button,
    Led,
    /// Going live and stopping.
    Live,
    Sensor,
    Actuator,
}

/// One thing a node offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    pub kind: Kind,
    /// Unique within the node among capabilities of its kind ("temp", "door").
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// What `cambox cmd` can ask of it.
    #[serde(default)]
    pub actions: Vec<String>,
}

impl Capability {
    pub fn simple(kind: Kind, name: &str, actions: &[&str]) -> Self {
        Self {
            kind,
            name: name.into(),
            unit: None,
            min: None,
            max: None,
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// What a node announces on its catalog track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub v: u32,
    /// The box's name and site, for people.
    pub name: String,
    pub site: String,
    pub capabilities: Vec<Capability>,
}

/// One reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// A number when the sensor gave one, else its text.
    pub value: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// When it was read, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A telemetry object: every sensor's latest reading, so the newest group alone is the
/// whole picture (a late subscriber needs nothing older).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    pub v: u32,
    pub readings: std::collections::BTreeMap<String, Reading>,
}

/// A node of the mesh as `cambox sensors` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    pub short: String,
    pub site: String,
    /// Relays between this box and that node (0 for a neighbour; None for this box).
    pub hops: Option<usize>,
    pub local: bool,
    /// None until the node's announcement has arrived.
    pub announcement: Option<Announcement>,
    pub telemetry: Option<Telemetry>,
}

pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the bus of a box in a mesh: announces what it offers, publishes its sensors'
/// readings, and carries out the commands other nodes send it.
pub fn start(
    station: std::sync::Arc<crate::Station>,
    mesh: crate::mesh::Mesh,
    sensors: Vec<sensors::SensorSpec>,
    actuators: Vec<sensors::ActuatorSpec>,
) {
    use std::sync::Arc;
    let exec = Arc::new(commands::Executor {
        station: station.clone(),
        sensors: sensors.clone(),
        actuators,
    });
    let _ = station.bus.set(exec.clone());
    mesh.set_announcement(&exec.announcement());
    if !sensors.is_empty() {
        let mut readings = sensors::spawn(sensors);
        let m = mesh.clone();
        tokio::spawn(async move {
            loop {
                let t = readings.borrow_and_update().clone();
                if !t.readings.is_empty() {
                    m.set_telemetry(&t);
                }
                if readings.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    if let Some(mut incoming) = mesh.take_incoming() {
        tokio::spawn(async move {
            while let Some(c) = incoming.recv().await {
                let (m, exec) = (mesh.clone(), exec.clone());
                tokio::spawn(async move {
                    let reply = match serde_json::from_slice::<commands::Request>(&c.body) {
                        Ok(req) => exec.run(&req).await,
                        Err(e) => commands::Reply::err(format!("unreadable command: {e}")),
                    };
                    m.reply(c.from, c.id, &reply);
                });
            }
        });
    }
}
