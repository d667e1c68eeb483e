//! `cambox sensors`, `cambox cmd` and `cambox chat`: the overlay's bus, through a box's
//! HTTP API (the local box by default).

use std::time::Duration;

use anyhow::Context;

use crate::duration::parse_duration;
use crate::mesh_cli::{get_json_or_print, get_text, BoxAddr};

#[derive(Debug, clap::Args)]
pub struct SensorsArgs {
    #[command(flatten)]
    pub target: BoxAddr,
    /// Print the box's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct CmdArgs {
    /// The node: its id (hex; the first 6 or more digits do) or its box name.
    pub node: String,
    /// live, led, sensor:NAME, actuator:NAME or node (`cambox sensors` lists them).
    pub capability: String,
    /// e.g. start, stop, toggle, status (live); identify (led); read; set; capabilities.
    pub action: String,
    /// Arguments of the action (e.g. the value for `actuator:relay set on`).
    pub args: Vec<String>,
    #[command(flatten)]
    pub target: BoxAddr,
}

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// The room: site:SITE, live:STREAM@ORIGIN, or any name [default: site:<the box's site>].
    pub room: Option<String>,
    /// Send this message, print it, and stop.
    #[arg(long, value_name = "TEXT")]
    pub send: Option<String>,
    /// The name to send as [default: the box's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Stop following after this long (e.g. 30s) [default: until interrupted].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub target: BoxAddr,
}

async fn post(
    target: &BoxAddr,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let url = target.url(path);
    let client = cambox_node::client::ApiClient::from_env()?;
    let (status, answer) = client
        .post_json(
            &url,
            serde_json::to_vec(&body)?,
            target.session.token.as_deref(),
        )
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&answer)
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if !(200..300).contains(&status) {
        anyhow::bail!(
            "{}",
            v["error"]
                .as_str()
                .map_or(format!("{url}: {status}"), String::from)
        );
    }
    Ok(v)
}

pub async fn sensors(args: SensorsArgs) -> anyhow::Result<()> {
    let Some(v) = get_json_or_print(&args.target, "/api/v1/sensors", args.json).await? else {
        return Ok(());
    };
    println!(
        "{:<14} {:<16} {:<10} {:>4}  CAPABILITIES / READINGS",
        "NODE", "NAME", "SITE", "HOPS"
    );
    for n in v["nodes"].as_array().cloned().unwrap_or_default() {
        let a = &n["announcement"];
        let caps: Vec<String> = a["capabilities"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let kind = c["kind"].as_str().unwrap_or("?");
                match kind {
                    "sensor" | "actuator" => {
                        format!("{kind}:{}", c["name"].as_str().unwrap_or("?"))
                    }
                    _ => kind.to_string(),
                }
            })
            .collect();
        let readings: Vec<String> = n["telemetry"]["readings"]
            .as_object()
            .map(|r| {
                r.iter()
                    .map(|(k, v)| {
                        format!(
                            "{k}={}{}",
                            v["value"],
                            v["unit"].as_str().unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let hops = n["hops"].as_u64().map_or("-".into(), |h| h.to_string());
        println!(
            "{:<14} {:<16} {:<10} {:>4}  {}{}{}",
            n["short"].as_str().unwrap_or("?"),
            a["name"].as_str().unwrap_or("(not yet heard)"),
            n["site"].as_str().unwrap_or("?"),
            hops,
            caps.join(" "),
            if readings.is_empty() { "" } else { "  " },
            readings.join(" "),
        );
    }
    Ok(())
}

pub async fn cmd(args: CmdArgs) -> anyhow::Result<()> {
    let v = post(
        &args.target,
        "/api/v1/cmd",
        serde_json::json!({
            "node": args.node,
            "capability": args.capability,
            "action": args.action,
            "args": args.args,
        }),
    )
    .await?;
    let reply = &v["reply"];
    println!("{}", serde_json::to_string_pretty(reply)?);
    if reply["ok"] != true {
        anyhow::bail!(
            "node {} refused: {}",
            v["node"].as_str().unwrap_or("?"),
            reply["error"].as_str().unwrap_or("no reason given")
        );
    }
    Ok(())
}

fn print_message(m: &serde_json::Value) {
    let at = m["at_ms"].as_u64().unwrap_or(0) / 1000;
    let (h, mi, s) = ((at / 3600) % 24, (at / 60) % 60, at % 60);
    println!(
        "{h:02}:{mi:02}:{s:02} UTC  {} ({}): {}",
        m["name"].as_str().unwrap_or("?"),
        m["from"].as_str().map_or("?", |f| &f[..f.len().min(12)]),
        m["text"].as_str().unwrap_or("")
    );
}

pub async fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let room = match &args.room {
        Some(r) => r.clone(),
        None => {
            let status: serde_json::Value = serde_json::from_str(
                &get_text(
                    &args.target.url("/api/v1/status"),
                    args.target.session.token.as_deref(),
                )
                .await?,
            )?;
            format!("site:{}", status["site"].as_str().unwrap_or("local"))
        }
    };
    if let Some(text) = &args.send {
        let mut body = serde_json::json!({ "text": text });
        if let Some(n) = &args.name {
            body["name"] = n.clone().into();
        }
        let m = post(&args.target, &format!("/api/v1/chat/{room}"), body).await?;
        print_message(&m);
        return Ok(());
    }
    eprintln!("cambox: following chat room {room} (Ctrl-C to stop)");
    let url = args.target.url(&format!("/api/v1/chat/{room}/events"));
    let follow = async {
        let mut body =
            cambox_node::client::get_as(&url, args.target.session.token.as_deref()).await?;
        let mut pending = String::new();
        while let Some(chunk) = body.chunk().await? {
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let event: String = pending.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    if let Ok(m) = serde_json::from_str::<serde_json::Value>(data) {
                        print_message(&m);
                    }
                }
            }
        }
        anyhow::Ok(())
    };
    match args.duration {
        Some(d) => match tokio::time::timeout(d, follow).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        },
        None => follow.await,
    }
}
