//! `cambox audit`: who watched which stream from when to when, and who pressed what, from
//! the box's audit log.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::Context;
use cambox_node::audit::{self, Record};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The audit log [default: audit.log beside the default node key; on the image
    /// /data/cambox/audit.log].
    #[arg(long, env = "CAMBOX_AUDIT", value_name = "PATH")]
    file: Option<PathBuf>,
    /// Only what happened in this last while, e.g. 2h [default: all it keeps].
    #[arg(long, value_name = "DURATION")]
    since: Option<String>,
    /// One JSON object a line, as stored.
    #[arg(long)]
    json: bool,
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    let path = args.file.unwrap_or_else(|| {
        crate::config::RunConfig::default()
            .key_path()
            .with_file_name("audit.log")
    });
    let since = match &args.since {
        Some(s) => crate::duration::parse_duration(s).map_err(anyhow::Error::msg)?,
        None => std::time::Duration::from_secs(u64::MAX / 4),
    };
    if !path.exists() && !audit::previous_exists(&path) {
        anyhow::bail!(
            "{} does not exist: nothing was recorded there yet",
            path.display()
        );
    }
    let records = audit::read(&path, since, SystemTime::now())
        .with_context(|| format!("cannot read {}", path.display()))?;
    for r in &records {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
        } else {
            println!("{}", line(r));
        }
    }
    if !args.json {
        eprintln!("{} record(s) from {}", records.len(), path.display());
    }
    Ok(())
}

/// A record as a person reads it: `2026-12-05 05:40:00 UTC  watch  alice (sso)  hall
/// whep  05:31:02 - 05:40:00`.
fn line(r: &Record) -> String {
    let at = cambox_trust::utc(cambox_trust::from_unix_secs(r.at));
    let who = match &r.via {
        Some(v) if v != "anonymous" => format!("{} ({v})", r.who),
        _ => r.who.clone(),
    };
    let mut parts = vec![at, format!("{:<8}", r.event), who];
    if let Some(s) = &r.stream {
        parts.push(s.clone());
    }
    if let Some(p) = &r.protocol {
        parts.push(p.clone());
    }
    if let Some(site) = &r.site {
        parts.push(format!("site {site}"));
    }
    if let Some(from) = r.from {
        let from = cambox_trust::utc(cambox_trust::from_unix_secs(from));
        parts.push(format!("watched since {from}"));
    }
    if let Some(d) = &r.detail {
        parts.push(d.clone());
    }
    parts.join("  ")
}
