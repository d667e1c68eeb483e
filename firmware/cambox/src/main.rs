//! `cambox`: a live-video box, and the tools around it.

mod audit_cmd;
mod boot_config;
mod box_files;
mod bus_cli;
mod ca_cmd;
mod config;
mod doctor;
mod duration;
mod mesh_cli;
mod record;
mod registry_cmd;
mod release_cmd;
mod reset;
mod run;
mod strip;
mod trust_files;
mod update_cmd;
mod user_cmd;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cambox",
    version,
    about = "A live-video box: camera and microphone in, H.264 + Opus out to every viewer.",
    long_about = "A live-video box: camera and microphone in, H.264 + Opus out to every viewer.\n\n\
        `cambox run` starts the box with its web page; without a camera it uses a test \
        picture and tone. `cambox record` saves a live stream (or any source) to MP4; \
        `cambox strip` reads the test strip from a recording or live stream to measure \
        latency and lost frames."
)]
struct Cli {
    /// Log filter, e.g. info, debug, cambox_node=trace.
    #[arg(long, global = true, env = "CAMBOX_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the box: capture, encode, and serve the web page and live streams.
    ///
    /// Every option is also a key of the TOML file given with --config and an environment
    /// variable CAMBOX_<OPTION>; flags win over the environment, which wins over the file.
    Run(Box<config::RunConfig>),
    /// Record a live stream (http://box:8080/live/NAME.mp4) or a source (testsrc,
    /// file:PATH, a path) to an MP4 file.
    Record(record::RecordArgs),
    /// Read the test strip of every frame of a recording or live stream: frame number,
    /// capture time, arrival time, and a summary of gaps, repeats and latency.
    Strip(strip::StripArgs),
    /// List the broadcasts a box knows: its own and every one in its mesh, with the
    /// origin, site and hops away.
    List(mesh_cli::ListArgs),
    /// Watch a broadcast from anywhere in the mesh through a box: writes fragmented MP4
    /// to a file or standard output.
    Watch(mesh_cli::WatchArgs),
    /// Log in to a box where people log in, and print the session token for the other
    /// commands: `export CAMBOX_TOKEN=$(cambox login alice)`.
    Login(mesh_cli::LoginArgs),
    /// List every node of the mesh with what it offers (camera, LED, sensors, ...) and
    /// its latest readings.
    Sensors(bus_cli::SensorsArgs),
    /// Command a node of the mesh, e.g. `cambox cmd a1b2c3 live start` or
    /// `cambox cmd hall led identify`; the node must allow this box (--allow-commands).
    Cmd(bus_cli::CmdArgs),
    /// Follow a chat room (site:SITE, live:STREAM@ORIGIN, ...) or send to it with --send.
    Chat(bus_cli::ChatArgs),
    /// What this box can reach, the way it would reach it (proxy, registries, peers by
    /// QUIC over UDP and over TCP), and what to open in the firewall for the rest.
    Doctor(Box<doctor::DoctorArgs>),
    /// Run a registry: boxes announce themselves and their streams here so that boxes and
    /// viewers at other sites find them. Soft state, signed by node keys, no database.
    Registry(registry_cmd::RegistryArgs),
    /// The company CA (on an administrator's machine): make it, certify boxes, make join
    /// tokens and enrolment keys for registries, revoke boxes.
    Ca(ca_cmd::CaArgs),
    /// The company's release key and signed update bundles (where releases are built).
    Release(release_cmd::ReleaseArgs),
    /// Publish a signed update bundle to the mesh through a box.
    Update(update_cmd::UpdateArgs),
    /// The box's local accounts (for a site without single sign-on): add, remove, list.
    User(user_cmd::UserArgs),
    /// Who watched which stream from when to when, and who pressed what, from the box's
    /// audit log (kept 48 h by default).
    Audit(audit_cmd::AuditArgs),
    /// SD image start-up: check the cambox.toml on the boot partition and copy it to the
    /// data partition (with wpa_supplicant.conf from its [wifi]), atomically.
    ImportConfig(boot_config::ImportArgs),
    /// Print this box's node id, making the node key first if there is none.
    Id(boot_config::IdArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cambox: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(cfg) => run::run(*cfg).await,
            Command::Record(args) => record::record(args).await,
            Command::Strip(args) => strip::strip(args).await,
            Command::List(args) => mesh_cli::list(args).await,
            Command::Watch(args) => mesh_cli::watch(args).await,
            Command::Login(args) => mesh_cli::login(args).await,
            Command::Sensors(args) => bus_cli::sensors(args).await,
            Command::Cmd(args) => bus_cli::cmd(args).await,
            Command::Chat(args) => bus_cli::chat(args).await,
            Command::Doctor(args) => doctor::run(*args).await,
            Command::Registry(args) => registry_cmd::run(args).await,
            Command::Ca(args) => ca_cmd::run(args).await,
            Command::Release(args) => release_cmd::run(args),
            Command::Update(args) => update_cmd::run(args).await,
            Command::User(args) => user_cmd::run(args),
            Command::Audit(args) => audit_cmd::run(args),
            Command::ImportConfig(args) => boot_config::import_cmd(args),
            Command::Id(args) => boot_config::id_cmd(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cambox: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
