//! Sensors and actuators a user attaches without writing Rust: a sensor reads a file or
//! runs a command; an actuator runs a command with the value it is set to. Readings are
//! published as the node's telemetry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::{Capability, Kind, Reading, Telemetry, FORMAT_VERSION};

/// A reading is published when it changes, and at least this often anyway.
const REPUBLISH: Duration = Duration::from_secs(10);
/// A sensor or actuator command that runs longer than this is stopped.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep this much of a command's output.
const MAX_OUTPUT: usize = 4096;

/// `[[sensor]]` in the config file, or `--sensor name=temp,unit=C,file=/sys/...`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorSpec {
    pub name: String,
    pub unit: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Read this file (its trimmed text is the reading).
    pub file: Option<PathBuf>,
    /// Or run this shell command (its trimmed output is the reading).
    pub cmd: Option<String>,
    /// Seconds between reads [default: 0.2 for a file, 1 for a command].
    pub every: Option<f64>,
}

/// `[[actuator]]`, or `--actuator name=relay,cmd=...`: `cambox cmd <node> actuator
/// <name> set <value>` runs `cmd` with the value in `$CAMBOX_VALUE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorSpec {
    pub name: String,
    pub cmd: String,
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "{what} name '{name}' must be 1 to 64 letters, digits and - _ ."
        ));
    }
    Ok(())
}

/// Splits `key=value,key=value`; `cmd=` takes the rest of the text, commas and all.
fn pairs(spec: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = spec;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("'{rest}' is not key=value"))?;
        let key = key.trim().to_string();
        let (value, next) = if key == "cmd" {
            (after, "")
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        if out.insert(key.clone(), value.to_string()).is_some() {
            return Err(format!("'{key}' is given twice"));
        }
        rest = next;
    }
    Ok(out)
}

impl SensorSpec {
    /// Parses `name=temp,unit=C,min=-40,max=85,every=2,file=PATH` (or `cmd=COMMAND`, last).
    pub fn parse(spec: &str) -> Result<SensorSpec, String> {
        let mut p = pairs(spec).map_err(|e| format!("--sensor '{spec}': {e}"))?;
        let num = |p: &mut BTreeMap<String, String>, k: &str| -> Result<Option<f64>, String> {
            p.remove(k)
                .map(|v| {
                    v.parse::<f64>()
                        .map_err(|_| format!("--sensor '{spec}': {k}={v} is not a number"))
                })
                .transpose()
        };
        let s = SensorSpec {
            name: p.remove("name").unwrap_or_default(),
            unit: p.remove("unit"),
            min: num(&mut p, "min")?,
            max: num(&mut p, "max")?,
            every: num(&mut p, "every")?,
            file: p.remove("file").map(PathBuf::from),
            cmd: p.remove("cmd"),
        };
        if let Some(k) = p.keys().next() {
            return Err(format!(
                "--sensor '{spec}': unknown key '{k}' (name, unit, min, max, every, file, cmd)"
            ));
        }
        s.check()?;
        Ok(s)
    }

    pub fn check(&self) -> Result<(), String> {
        check_name("sensor", &self.name)?;
        match (&self.file, &self.cmd) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(format!(
                    "sensor '{}' needs exactly one of file=PATH and cmd=COMMAND",
                    self.name
                ))
            }
        }
        if self.every.is_some_and(|e| !(0.05..=3600.0).contains(&e)) {
            return Err(format!(
                "sensor '{}': every must be 0.05 to 3600 seconds",
                self.name
            ));
        }
        Ok(())
    }

    fn period(&self) -> Duration {
        let default = if self.file.is_some() { 0.2 } else { 1.0 };
        Duration::from_secs_f64(self.every.unwrap_or(default))
    }

    pub fn capability(&self) -> Capability {
        Capability {
            kind: Kind::Sensor,
            name: self.name.clone(),
            unit: self.unit.clone(),
            min: self.min,
            max: self.max,
            actions: vec!["read".into()],
        }
    }

    /// Reads the sensor once.
    pub async fn read(&self) -> Result<serde_json::Value, String> {
        let text = match (&self.file, &self.cmd) {
            (Some(f), _) => tokio::fs::read_to_string(f)
                .await
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?,
            (_, Some(c)) => run_shell(c, None).await?,
            _ => return Err("no source".into()),
        };
        Ok(value_of(text.trim()))
    }
}

impl ActuatorSpec {
    pub fn parse(spec: &str) -> Result<ActuatorSpec, String> {
        let mut p = pairs(spec).map_err(|e| format!("--actuator '{spec}': {e}"))?;
        let a = ActuatorSpec {
            name: p.remove("name").unwrap_or_default(),
            cmd: p.remove("cmd").unwrap_or_default(),
        };
        if let Some(k) = p.keys().next() {
            return Err(format!(
                "--actuator '{spec}': unknown key '{k}' (name, cmd)"
            ));
        }
        a.check()?;
        Ok(a)
    }

    pub fn check(&self) -> Result<(), String> {
        check_name("actuator", &self.name)?;
        if self.cmd.trim().is_empty() {
            return Err(format!("actuator '{}' needs cmd=COMMAND", self.name));
        }
        Ok(())
    }

    pub fn capability(&self) -> Capability {
        Capability::simple(Kind::Actuator, &self.name, &["set"])
    }

    /// Runs the command with `$CAMBOX_VALUE` set; returns its output.
    pub async fn set(&self, value: &str) -> Result<String, String> {
        run_shell(&self.cmd, Some(value)).await
    }
}

/// A number when the text is one, else the text.
fn value_of(text: &str) -> serde_json::Value {
    if let Ok(n) = text.parse::<i64>() {
        return serde_json::json!(n);
    }
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => serde_json::json!(n),
        _ => serde_json::Value::String(text.chars().take(MAX_OUTPUT).collect()),
    }
}

async fn run_shell(cmd: &str, value: Option<&str>) -> Result<String, String> {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(cmd).kill_on_drop(true);
    if let Some(v) = value {
        c.env("CAMBOX_VALUE", v);
    }
    let out = tokio::time::timeout(COMMAND_TIMEOUT, c.output())
        .await
        .map_err(|_| format!("'{cmd}' ran over {COMMAND_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot run '{cmd}': {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.truncate(MAX_OUTPUT);
    if !out.status.success() {
        return Err(format!(
            "'{cmd}' failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text.trim().to_string())
}

/// Reads every sensor on its period and keeps the latest readings; the receiver sees a
/// new value when a reading changed (or every 10 s).
pub fn spawn(specs: Vec<SensorSpec>) -> watch::Receiver<Telemetry> {
    let (tx, rx) = watch::channel(Telemetry {
        v: FORMAT_VERSION,
        readings: BTreeMap::new(),
    });
    for spec in specs {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(spec.period());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last: Option<(serde_json::Value, tokio::time::Instant)> = None;
            let mut warned = false;
            loop {
                tick.tick().await;
                let value = match spec.read().await {
                    Ok(v) => v,
                    Err(e) => {
                        if !warned {
                            tracing::warn!(sensor = %spec.name, "{e}");
                            warned = true;
                        }
                        continue;
                    }
                };
                warned = false;
                let now = tokio::time::Instant::now();
                let due = last
                    .as_ref()
                    .is_none_or(|(v, at)| *v != value || now >= *at + REPUBLISH);
                if !due {
                    continue;
                }
                last = Some((value.clone(), now));
                let reading = Reading {
                    value,
                    unit: spec.unit.clone(),
                    at_ms: super::wall_ms(),
                };
                tx.send_modify(|t| {
                    t.readings.insert(spec.name.clone(), reading);
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_specs_parse_with_a_command_taking_the_rest() {
        let s = SensorSpec::parse("name=temp,unit=C,min=-40,max=85,cmd=echo 1,2 | cut -d, -f1")
            .unwrap();
        assert_eq!(s.name, "temp");
        assert_eq!(s.unit.as_deref(), Some("C"));
        assert_eq!((s.min, s.max), (Some(-40.0), Some(85.0)));
        assert_eq!(s.cmd.as_deref(), Some("echo 1,2 | cut -d, -f1"));
        let f = SensorSpec::parse("name=door,file=/tmp/door,every=0.5").unwrap();
        assert_eq!(f.period(), Duration::from_millis(500));
        for (bad, why) in [
            ("unit=C,file=/x", "name"),
            ("name=t", "exactly one"),
            ("name=t,file=/x,cmd=y", "exactly one"),
            ("name=t,file=/x,colour=red", "unknown key 'colour'"),
            ("name=t,file=/x,min=cold", "not a number"),
            ("name=t t,file=/x", "letters"),
            ("name=t,file=/x,every=0", "every"),
            ("name", "key=value"),
        ] {
            let e = SensorSpec::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn readings_come_from_files_and_commands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "21.5\n").unwrap();
        let f = SensorSpec::parse(&format!("name=t,file={}", path.display())).unwrap();
        assert_eq!(f.read().await.unwrap(), serde_json::json!(21.5));
        std::fs::write(&path, "open\n").unwrap();
        assert_eq!(f.read().await.unwrap(), serde_json::json!("open"));
        let c = SensorSpec::parse("name=c,cmd=echo 7").unwrap();
        assert_eq!(c.read().await.unwrap(), serde_json::json!(7));
        let bad = SensorSpec::parse("name=c,cmd=exit 3").unwrap();
        assert!(bad.read().await.unwrap_err().contains("failed"));
        let a = ActuatorSpec::parse("name=relay,cmd=echo set to $CAMBOX_VALUE").unwrap();
        assert_eq!(a.set("on").await.unwrap(), "set to on");
    }

    #[tokio::test]
    async fn a_changed_file_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "1").unwrap();
        let spec = SensorSpec::parse(&format!("name=t,unit=C,every=0.05,file={}", path.display()))
            .unwrap();
        let mut rx = spawn(vec![spec]);
        let first = rx
            .wait_for(|t| t.readings.contains_key("t"))
            .await
            .unwrap()
            .clone();
        assert_eq!(first.readings["t"].value, serde_json::json!(1));
        std::fs::write(&path, "2").unwrap();
        let next = tokio::time::timeout(
            Duration::from_secs(5),
            rx.wait_for(|t| t.readings["t"].value == serde_json::json!(2)),
        )
        .await
        .expect("the change arrives")
        .unwrap()
        .clone();
        assert_eq!(next.readings["t"].unit.as_deref(), Some("C"));
    }
}
