//! `cambox user`: the box's local accounts, for a site without single sign-on. The file is
//! `users.toml` beside the node key (`/data/cambox/users.toml` on the image); a running
//! box reads it at start.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use cambox_node::auth::accounts::{Accounts, Role};

use crate::box_files::write_atomic;

#[derive(Debug, clap::Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
    /// The accounts file [default: users.toml beside the default node key].
    #[arg(long, global = true, env = "CAMBOX_USERS", value_name = "PATH")]
    users: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum UserCommand {
    /// Add an account, or set its password, role and groups. The password is asked for
    /// (twice) on a terminal, else read from the first line of standard input.
    Add {
        name: String,
        /// viewer (watches) or operator (also goes live, presses the button, commands,
        /// chats).
        #[arg(long, default_value = "viewer")]
        role: Role,
        /// A group the person is in, for per-stream rules (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Remove an account.
    Remove { name: String },
    /// List the accounts (names, roles, groups; never hashes).
    List,
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let path = args.users.unwrap_or_else(default_path);
    let mut accounts = load(&path)?;
    match args.command {
        UserCommand::Add { name, role, groups } => {
            let password = read_password(&name)?;
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt)
                .map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
            accounts
                .set(&name, &password, role, groups, salt)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            save(&path, &accounts)?;
            eprintln!(
                "{name} ({role}) is in {}; restart the box to use it",
                path.display()
            );
        }
        UserCommand::Remove { name } => {
            if !accounts.remove(&name) {
                anyhow::bail!("{} has no account {name:?}", path.display());
            }
            save(&path, &accounts)?;
            eprintln!("removed {name}; restart the box to log them out");
        }
        UserCommand::List => {
            for a in &accounts.users {
                println!("{}\t{}\t{}", a.name, a.role, a.groups.join(","));
            }
        }
    }
    Ok(())
}

fn default_path() -> PathBuf {
    crate::config::RunConfig::default().users_path()
}

/// The accounts in `path` (none if it does not exist), checked.
pub fn load(path: &Path) -> anyhow::Result<Accounts> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Accounts::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let accounts: Accounts = toml::from_str(&text)
        .with_context(|| format!("{} is not an accounts file", path.display()))?;
    accounts
        .check()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(accounts)
}

fn save(path: &Path, accounts: &Accounts) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    }
    let text = toml::to_string(accounts).context("cannot write the accounts")?;
    write_atomic(path, text.as_bytes())?;
    // Hashes, not passwords; still nobody else's business.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))
}

fn read_password(name: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return read_password_once(name);
    }
    let first = prompt(&format!("password for {name}: "))?;
    let second = prompt("again: ")?;
    if first != second {
        anyhow::bail!("the two passwords differ");
    }
    Ok(first)
}

/// `name`'s password: asked for once on a terminal, else standard input's first line.
pub fn read_password_once(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return prompt(&format!("password for {name}: "));
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Reads a line from the terminal with echo off.
fn prompt(text: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{text}");
    std::io::stderr().flush()?;
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("cannot turn echo off")?;
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
