//! What a box does when commanded: `cambox cmd <node> <capability> <action> [args]`
//! arrives here (from the overlay, checked and signed, or from this box's own API).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::sensors::{ActuatorSpec, SensorSpec};
use super::{Announcement, Capability, Kind, FORMAT_VERSION};
use crate::board::led::Overlay;
use crate::station::Station;

/// A command's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `live`, `led`, `sensor:<name>`, `actuator:<name>` or `node`.
    pub capability: String,
    pub action: String,
    #[serde(default)]
    pub args: Vec<String>,
}

/// A reply's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn err(e: impl Into<String>) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(e.into()),
        }
    }
}

/// Carries out commands on this box.
#[derive(Debug)]
pub struct Executor {
    pub station: Arc<Station>,
    pub sensors: Vec<SensorSpec>,
    pub actuators: Vec<ActuatorSpec>,
}

impl Executor {
    /// What this box offers, for its announcement.
    pub fn announcement(&self) -> Announcement {
        let s = &self.station.settings;
        let mut caps = Vec::new();
        if s.source != cambox_media::SourceSpec::None {
            caps.push(Capability::simple(Kind::Camera, &s.source.to_string(), &[]));
            use cambox_media::source::spec::AudioSpec;
            let mic = match &s.audio {
                AudioSpec::None => None,
                AudioSpec::Auto => Some("auto".to_string()),
                AudioSpec::Tone => Some("tone".to_string()),
                AudioSpec::Alsa(d) => Some(format!("alsa:{d}")),
            };
            if let Some(m) = mic {
                caps.push(Capability::simple(Kind::Microphone, &m, &[]));
            }
            caps.push(Capability::simple(
                Kind::Live,
                &s.stream,
                &["start", "stop", "toggle", "status"],
            ));
        }
        caps.push(Capability::simple(Kind::Button, "button", &[]));
        caps.push(Capability::simple(
            Kind::Led,
            "status",
            &["identify", "status"],
        ));
        caps.extend(self.sensors.iter().map(SensorSpec::capability));
        caps.extend(self.actuators.iter().map(ActuatorSpec::capability));
        Announcement {
            v: FORMAT_VERSION,
            name: s.node.clone(),
            site: s.site.clone(),
            capabilities: caps,
        }
    }

    pub async fn run(&self, req: &Request) -> Reply {
        let (cap, name) = match req.capability.split_once(':') {
            Some((c, n)) => (c, Some(n)),
            None => (req.capability.as_str(), None),
        };
        match (cap, req.action.as_str()) {
            ("live", action @ ("start" | "stop" | "toggle")) => {
                if self.station.settings.source == cambox_media::SourceSpec::None {
                    return Reply::err("this box has no camera");
                }
                let st = self.station.clone();
                let action = action.to_string();
                let done = tokio::task::spawn_blocking(move || {
                    let want = match action.as_str() {
                        "start" => true,
                        "stop" => false,
                        _ => !st.is_live(),
                    };
                    st.set_live(want).map(|()| st.is_live())
                })
                .await;
                match done {
                    Ok(Ok(live)) => Reply::ok(serde_json::json!({ "live": live })),
                    Ok(Err(e)) => Reply::err(format!("cannot go live: {e}")),
                    Err(e) => Reply::err(e.to_string()),
                }
            }
            ("live", "status") => Reply::ok(serde_json::json!({ "live": self.station.is_live() })),
            ("led", "identify") => {
                self.station.request_led(Overlay::Identify);
                Reply::ok(serde_json::json!({ "identify_s": 10 }))
            }
            ("led", "status") => {
                Reply::ok(serde_json::to_value(self.station.status().led).unwrap_or_default())
            }
            ("sensor", "read") => {
                let Some(s) = self.sensors.iter().find(|s| Some(s.name.as_str()) == name) else {
                    return self.unknown(req);
                };
                match s.read().await {
                    Ok(v) => Reply::ok(serde_json::json!({ "value": v, "unit": s.unit })),
                    Err(e) => Reply::err(e),
                }
            }
            ("actuator", "set") => {
                let Some(a) = self
                    .actuators
                    .iter()
                    .find(|a| Some(a.name.as_str()) == name)
                else {
                    return self.unknown(req);
                };
                let Some(value) = req.args.first() else {
                    return Reply::err(format!("actuator:{} set needs a value", a.name));
                };
                match a.set(value).await {
                    Ok(out) => Reply::ok(serde_json::json!({ "output": out })),
                    Err(e) => Reply::err(e),
                }
            }
            ("node", "capabilities") => {
                Reply::ok(serde_json::to_value(self.announcement()).unwrap_or_default())
            }
            _ => self.unknown(req),
        }
    }

    fn unknown(&self, req: &Request) -> Reply {
        let offered: Vec<String> = self
            .announcement()
            .capabilities
            .iter()
            .filter(|c| !c.actions.is_empty())
            .map(|c| {
                let cap = match c.kind {
                    Kind::Sensor => format!("sensor:{}", c.name),
                    Kind::Actuator => format!("actuator:{}", c.name),
                    Kind::Live => "live".into(),
                    Kind::Led => "led".into(),
                    other => format!("{other:?}").to_lowercase(),
                };
                format!("{cap} {}", c.actions.join("|"))
            })
            .collect();
        Reply::err(format!(
            "this box cannot '{} {}'; it offers: {}, node capabilities",
            req.capability,
            req.action,
            offered.join(", ")
        ))
    }
}
