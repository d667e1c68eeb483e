//! `cambox list` and `cambox watch`: the mesh as seen from a box, over its HTTP API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::duration::parse_duration;
use crate::record::{record_url, RecordArgs};

/// Which box to ask; the local one by default.
#[derive(Debug, Clone, clap::Args)]
pub struct BoxAddr {
    /// The box's address, HOST:PORT or a URL. A box that serves HTTPS redirects there;
    /// its company CA's certificate is trusted when `CAMBOX_CA_FILE` names it.
    #[arg(
        long,
        env = "CAMBOX_BOX",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub http: String,
    #[command(flatten)]
    pub session: SessionToken,
}

/// The session of a person logged in to a box, for a box where people log in.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SessionToken {
    /// A session token (`export CAMBOX_TOKEN=$(cambox login NAME)`).
    #[arg(
        long,
        env = "CAMBOX_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl BoxAddr {
    pub fn url(&self, path: &str) -> String {
        let base = self.http.trim_end_matches('/');
        if base.starts_with("http://") || base.starts_with("https://") {
            format!("{base}{path}")
        } else {
            format!("http://{base}{path}")
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: BoxAddr,
    /// Print the box's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// The broadcast: NAME, or NAME@ORIGIN when several boxes use the name (see `cambox list`).
    pub broadcast: String,
    #[command(flatten)]
    pub target: BoxAddr,
    /// Where to write the fragmented MP4; - for standard output (e.g. `| ffplay -`).
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
    /// Stop after this long (e.g. 10s, 2m) [default: until interrupted].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

pub async fn get_text(url: &str, token: Option<&str>) -> anyhow::Result<String> {
    let mut body = cambox_node::client::get_as(url, token).await?;
    let mut text = Vec::new();
    while let Some(chunk) = body.chunk().await? {
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).context("the box answered with non-UTF-8 text")
}

/// GETs `path` from the box as JSON; with `raw`, prints it as it came and returns None
/// (the `--json` of the listing commands).
pub async fn get_json_or_print(
    target: &BoxAddr,
    path: &str,
    raw: bool,
) -> anyhow::Result<Option<serde_json::Value>> {
    let url = target.url(path);
    let text = get_text(&url, target.session.token.as_deref()).await?;
    if raw {
        println!("{text}");
        return Ok(None);
    }
    serde_json::from_str(&text)
        .map(Some)
        .with_context(|| format!("{url} did not answer JSON"))
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The account's name (a local account of the box: `cambox user add`).
    pub name: String,
    #[command(flatten)]
    pub target: BoxAddr,
}

/// Logs in to a box and prints the session token, for `--token` / `CAMBOX_TOKEN`. The
/// password is asked for on a terminal, else read from standard input's first line.
pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let password = crate::user_cmd::read_password_once(&args.name)?;
    let url = args.target.url("/api/v1/login");
    let client = cambox_node::client::ApiClient::from_env()?;
    let body = serde_json::json!({ "name": args.name, "password": password });
    let (status, answer) = client
        .post_json(&url, serde_json::to_vec(&body)?, None)
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&answer)
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    match v["token"].as_str() {
        Some(token) if status == 200 => {
            println!("{token}");
            Ok(())
        }
        _ => anyhow::bail!(
            "{}",
            v["error"]
                .as_str()
                .map_or(format!("{url}: {status}"), String::from)
        ),
    }
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let Some(v) = get_json_or_print(&args.target, "/api/v1/streams", args.json).await? else {
        return Ok(());
    };
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<24} {:<20} {:<12} {:>4}  {:<5}  URL",
        "NAME", "BOX", "SITE", "HOPS", "LIVE"
    );
    for s in &streams {
        let hops = s["hops"]
            .as_u64()
            .map_or("-".to_string(), |h| h.to_string());
        println!(
            "{:<24} {:<20} {:<12} {:>4}  {:<5}  {}",
            s["name"].as_str().unwrap_or("?"),
            s["node"].as_str().unwrap_or("?"),
            s["site"].as_str().unwrap_or("?"),
            hops,
            if s["live"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            args.target.url(s["url"].as_str().unwrap_or("")),
        );
    }
    Ok(())
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let url = args.target.url(&format!("/live/{}.mp4", args.broadcast));
    // A century is "until interrupted" without a second code path.
    let duration = args
        .duration
        .unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600));
    record_url(&RecordArgs {
        input: url,
        output: args.output,
        duration,
        width: 0,
        height: 0,
        fps: 0,
        bitrate: 0,
        session: args.target.session,
    })
    .await
}
