//! `cambox ca`: the company CA on an administrator's machine. Its directory holds the
//! root key (`ca.key`, readable by its owner only), its certificate (`ca.crt`, which every
//! box and registry is given) and the revocation list (`revoked.txt`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use cambox_mesh::NodeId;
use cambox_trust::authority::NodeClaims;
use cambox_trust::{Authority, JoinToken, RevocationList};

use crate::box_files::write_atomic;

#[derive(Debug, clap::Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CaCommand {
    /// Make a company CA in a new directory. Keep the directory offline (an admin's
    /// machine, a USB stick in a safe); give boxes and registries only its ca.crt.
    Init {
        /// The CA's directory (made; must not hold a CA yet).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The CA's name, as boxes show it ("Example GmbH cameras").
        #[arg(long)]
        name: String,
        /// How long the CA is valid.
        #[arg(long, default_value_t = 7300)]
        days: u32,
    },
    /// Certify one box by hand: its node id (`cambox id` on the box), site and name. Writes
    /// the node certificate, to put on the box as node.crt beside its node.key.
    Sign {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The box's node id, 64 hex digits.
        #[arg(long, value_name = "NODE_ID")]
        node: String,
        #[arg(long)]
        site: String,
        /// The box's name.
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Where to write it [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// A join token for the boxes of one site: put it in their cambox.toml as
    /// `join_token`, and a registry with an enrolment key certifies each box at its first
    /// start. Anyone holding it can enrol boxes at that site until it expires.
    Token {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long)]
        site: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// An enrolment key for a registry (`cambox registry --ca ca.crt --enroller DIR`): it
    /// certifies boxes that bring a join token, and nothing else.
    Enroller {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Where to write enrol.key, enrol.crt and a copy of ca.crt (made).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "cambox enrolment")]
        name: String,
        #[arg(long, default_value_t = 1825)]
        days: u32,
    },
    /// Revoke boxes: adds their node ids to revoked.txt, signed, and hands the list to
    /// boxes or registries, which pass it through the whole mesh; every enrolled box
    /// drops the revoked ones within seconds.
    Revoke {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Node ids to revoke, 64 hex digits (none: only push the current list).
        #[arg(value_name = "NODE_ID")]
        nodes: Vec<String>,
        /// A box (http://box:8080) or registry (http://registry:8090) to hand the list to
        /// (repeatable).
        #[arg(long, value_name = "URL")]
        push: Vec<String>,
    },
}

pub async fn run(args: CaArgs) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match args.command {
        CaCommand::Init { dir, name, days } => {
            if dir.join("ca.key").exists() {
                anyhow::bail!(
                    "{} already holds a CA; a second one would orphan every box it enrolled",
                    dir.display()
                );
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot make {}", dir.display()))?;
            let ca = Authority::create_root(&name, days, now)?;
            crate::box_files::write_private(&dir.join("ca.key"), &ca.key_pem())?;
            write_atomic(&dir.join("ca.crt"), ca.cert_pem().as_bytes())?;
            println!(
                "made CA {name:?} in {}: give boxes and registries {} (mesh_ca), keep ca.key offline",
                dir.display(),
                dir.join("ca.crt").display()
            );
        }
        CaCommand::Sign {
            dir,
            node,
            site,
            name,
            days,
            out,
        } => {
            let ca = open(&dir)?;
            let claims = NodeClaims {
                node: node_id(&node)?,
                site,
                name,
                days,
            };
            let chain = ca.issue_node(&claims, now)?;
            let pem = cambox_trust::pem::encode_certificates(&chain);
            match out {
                Some(path) => {
                    write_atomic(&path, pem.as_bytes())?;
                    eprintln!("wrote {}: put it on the box as node.crt", path.display());
                }
                None => print!("{pem}"),
            }
        }
        CaCommand::Token { dir, site, days } => {
            let ca = open(&dir)?;
            let expires = now + Duration::from_secs(86_400 * u64::from(days.max(1)));
            let token = JoinToken::issue(&ca, &site, expires).map_err(anyhow::Error::msg)?;
            eprintln!(
                "join token for site {site:?}, valid until {}:",
                cambox_trust::utc(expires)
            );
            println!("{token}");
        }
        CaCommand::Enroller {
            dir,
            out,
            name,
            days,
        } => {
            let ca = open(&dir)?;
            let enroller = ca.create_enroller(&name, days, now)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot make {}", out.display()))?;
            crate::box_files::write_private(&out.join("enrol.key"), &enroller.key_pem())?;
            write_atomic(&out.join("enrol.crt"), enroller.cert_pem().as_bytes())?;
            write_atomic(&out.join("ca.crt"), ca.cert_pem().as_bytes())?;
            println!(
                "made an enrolment key in {}: cambox registry --ca {} --enroller {}",
                out.display(),
                out.join("ca.crt").display(),
                out.display()
            );
        }
        CaCommand::Revoke { dir, nodes, push } => {
            if nodes.is_empty() && push.is_empty() {
                anyhow::bail!("name a node to revoke, or --push URL to hand on the current list");
            }
            let ca = open(&dir)?;
            let path = dir.join("revoked.txt");
            let mut list = match std::fs::read_to_string(&path) {
                Ok(text) => RevocationList::parse(&text, &ca.public_key())
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => RevocationList::default(),
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            };
            for node in &nodes {
                list = list
                    .revoke(node_id(node)?, &ca, now)
                    .map_err(anyhow::Error::msg)?;
            }
            if !nodes.is_empty() {
                write_atomic(&path, list.text().as_bytes())?;
                eprintln!(
                    "revocation list {} in {}: {} node(s) revoked",
                    list.number,
                    path.display(),
                    list.nodes.len()
                );
            }
            if list.number == 0 {
                anyhow::bail!("the CA has revoked nothing yet: there is no list to push");
            }
            push_list(&list, &push).await?;
        }
    }
    Ok(())
}

/// Hands the list to each box or registry; every one must take it (or already have it).
async fn push_list(list: &RevocationList, urls: &[String]) -> anyhow::Result<()> {
    let client = cambox_node::client::ApiClient::from_env()?;
    let mut failed = 0;
    for base in urls {
        let url = format!("{}/api/v1/revocations", base.trim_end_matches('/'));
        match client.put_text(&url, list.text().as_bytes().to_vec()).await {
            Ok((200, _)) => eprintln!("{base}: has list {}", list.number),
            Ok((status, body)) => {
                failed += 1;
                eprintln!(
                    "{base}: answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("{base}: {e}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} did not take the list", urls.len());
    }
    Ok(())
}

fn open(dir: &Path) -> anyhow::Result<Authority> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} (is {} a CA made by cambox ca init?)",
                path.display(),
                dir.display()
            )
        })
    };
    let ca = Authority::from_pem(&read("ca.crt")?, &read("ca.key")?)
        .with_context(|| format!("the CA in {}", dir.display()))?;
    if !ca.is_root() {
        anyhow::bail!("{} holds an enrolment key, not the CA", dir.display());
    }
    Ok(ca)
}

fn node_id(s: &str) -> anyhow::Result<NodeId> {
    NodeId::from_hex(s.trim()).with_context(|| {
        format!("'{s}' is not a node id (64 hex digits: `cambox id` on the box, or its /api/v1/status node_id)")
    })
}
