//! The SD image's start-up helpers: `cambox import-config` brings the `cambox.toml` a
//! person edited on the boot partition over to the data partition, and `cambox id` makes
//! or reads the node key and prints the id (for the host name).
//!
//! Import rules:
//! - the file is checked like `cambox run` checks it; a bad file is not taken, the box
//!   keeps its last good configuration and the reason goes to `import-error.txt`;
//! - a file is imported once: a copy of what was last imported is kept, so a reset by the
//!   button is not undone at the next boot unless the person edits the file again;
//! - every write is to a new file that is synced and renamed over the old one, then the
//!   directory is synced: a power cut at any moment leaves the old file or the new one,
//!   never half of one.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::box_files::{remove_durably, write_atomic};
use crate::config::{load_file, WifiConfig};

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file a person edits, on the boot partition.
    #[arg(long, default_value = "/boot/cambox.toml", value_name = "FILE")]
    pub from: PathBuf,
    /// The box's own copy goes here (on the data partition), with wpa_supplicant.conf.
    #[arg(long, default_value = "/data/cambox", value_name = "DIR")]
    pub to: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// The node key file; made (with a fresh key) if it does not exist.
    #[arg(long, value_name = "PATH")]
    pub key: PathBuf,
    /// Print all 64 hex digits instead of the short id.
    #[arg(long)]
    pub full: bool,
}

/// What an import did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    NoFile,
    Unchanged,
    Taken,
}

pub fn import_cmd(args: ImportArgs) -> anyhow::Result<()> {
    match import(&args.from, &args.to)? {
        Outcome::NoFile => eprintln!(
            "cambox: no {}; keeping the configuration in {}",
            args.from.display(),
            args.to.display()
        ),
        Outcome::Unchanged => {
            eprintln!("cambox: {} unchanged since its import", args.from.display())
        }
        Outcome::Taken => eprintln!(
            "cambox: imported {} into {}",
            args.from.display(),
            args.to.join("cambox.toml").display()
        ),
    }
    Ok(())
}

pub fn import(from: &Path, to: &Path) -> anyhow::Result<Outcome> {
    let Ok(new) = std::fs::read(from) else {
        return Ok(Outcome::NoFile);
    };
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let last = to.join("cambox.toml.imported");
    if std::fs::read(&last).ok().as_deref() == Some(new.as_slice()) {
        return Ok(Outcome::Unchanged);
    }
    let error_file = to.join("import-error.txt");
    let wifi = match check(from) {
        Ok(w) => w,
        Err(e) => {
            let msg = format!("{e:#}\n");
            write_atomic(&error_file, msg.as_bytes())?;
            anyhow::bail!(
                "{} was not imported, the box keeps its last configuration: {e:#}",
                from.display()
            );
        }
    };
    let wpa = to.join("wpa_supplicant.conf");
    match wifi {
        Some(w) => {
            let conf = wpa_supplicant_conf(&w).map_err(anyhow::Error::msg)?;
            write_atomic(&wpa, conf.as_bytes())?
        }
        None => remove_durably(&wpa)?,
    }
    write_atomic(&to.join("cambox.toml"), &new)?;
    // Last: a cut before this line imports the same file again at the next boot.
    write_atomic(&last, &new)?;
    remove_durably(&error_file)?;
    Ok(Outcome::Taken)
}

/// Checks a config file as `cambox run` would; returns its Wi-Fi settings.
fn check(path: &Path) -> anyhow::Result<Option<WifiConfig>> {
    let cfg = load_file(path)?;
    let settings = cfg.settings()?;
    cfg.mesh_settings(&settings)?;
    cfg.registries()?;
    cfg.bus_devices()?;
    cfg.gpio_pins()?;
    if let Some(w) = &cfg.wifi {
        wpa_supplicant_conf(w)
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    }
    Ok(cfg.wifi)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// wpa_supplicant's configuration for `[wifi]`. The SSID is written in hex, so any name
/// works; the passphrase must be 8 to 63 printable characters without `"`.
pub fn wpa_supplicant_conf(w: &WifiConfig) -> Result<String, String> {
    if w.ssid.is_empty() || w.ssid.len() > 32 {
        return Err(format!("[wifi] ssid '{}' must be 1 to 32 bytes", w.ssid));
    }
    let mut out = String::from("ctrl_interface=/run/wpa_supplicant\nupdate_config=0\n");
    if let Some(c) = &w.country {
        if c.len() != 2 || !c.chars().all(|ch| ch.is_ascii_uppercase()) {
            return Err(format!(
                "[wifi] country '{c}' must be two capital letters, e.g. DE"
            ));
        }
        out.push_str(&format!("country={c}\n"));
    }
    out.push_str(&format!("network={{\n\tssid={}\n", hex(w.ssid.as_bytes())));
    match &w.psk {
        None => out.push_str("\tkey_mgmt=NONE\n"),
        Some(k) if k.len() == 64 && k.chars().all(|c| c.is_ascii_hexdigit()) => {
            out.push_str(&format!("\tpsk={k}\n"))
        }
        Some(p) => {
            let printable = p.chars().all(|c| (' '..='~').contains(&c) && c != '"');
            if !(8..=63).contains(&p.len()) || !printable {
                return Err(
                    "[wifi] psk must be 8 to 63 printable characters without \" \
                     (or the 64-hex-digit key)"
                        .into(),
                );
            }
            out.push_str(&format!("\tpsk=\"{p}\"\n"));
        }
    }
    out.push_str("}\n");
    Ok(out)
}

pub fn id_cmd(args: IdArgs) -> anyhow::Result<()> {
    let id = crate::box_files::load_node_key(&args.key)?.node_id();
    println!("{}", if args.full { id.to_hex() } else { id.short() });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name = \"yard\"\nsite = \"hq\"\n\n[wifi]\nssid = \"Café \\\"net\\\"\"\npsk = \"correct horse\"\ncountry = \"DE\"\n";

    #[test]
    fn a_good_file_is_imported_once_with_its_wifi() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot.toml");
        let data = dir.path().join("data");
        std::fs::write(&boot, GOOD).unwrap();
        assert_eq!(import(&boot, &data).unwrap(), Outcome::Taken);
        assert_eq!(
            std::fs::read_to_string(data.join("cambox.toml")).unwrap(),
            GOOD
        );
        let wpa = std::fs::read_to_string(data.join("wpa_supplicant.conf")).unwrap();
        assert!(
            wpa.contains(&format!("ssid={}", hex("Café \"net\"".as_bytes()))),
            "{wpa}"
        );
        assert!(
            wpa.contains("psk=\"correct horse\"") && wpa.contains("country=DE"),
            "{wpa}"
        );
        assert_eq!(import(&boot, &data).unwrap(), Outcome::Unchanged);
        // A reset by the button (the box's copy replaced) is not undone by the next boot...
        std::fs::write(
            data.join("cambox.toml"),
            "key = \"/data/cambox/node.key\"\n",
        )
        .unwrap();
        assert_eq!(import(&boot, &data).unwrap(), Outcome::Unchanged);
        // ...until the person edits the file again; without [wifi], Wi-Fi is forgotten.
        std::fs::write(&boot, "name = \"gate\"\n").unwrap();
        assert_eq!(import(&boot, &data).unwrap(), Outcome::Taken);
        assert!(!data.join("wpa_supplicant.conf").exists());
        assert!(!data.join("cambox.toml.new").exists());
    }

    #[test]
    fn a_bad_file_is_refused_and_the_last_good_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot.toml");
        let data = dir.path().join("data");
        std::fs::write(&boot, GOOD).unwrap();
        import(&boot, &data).unwrap();
        for (bad, why) in [
            ("nmae = \"typo\"\n", "nmae"),
            ("fps = \"fast\"\n", "fps"),
            ("[wifi]\nssid = \"x\"\npsk = \"short\"\n", "psk"),
            ("[wifi]\nssid = \"x\"\ncountry = \"germany\"\n", "country"),
            ("peers = [\"nocolon\"]\n", "HOST:PORT"),
        ] {
            std::fs::write(&boot, bad).unwrap();
            let e = format!("{:#}", import(&boot, &data).unwrap_err());
            assert!(
                e.contains(why) && e.contains("keeps its last"),
                "{bad}: {e}"
            );
            assert_eq!(
                std::fs::read_to_string(data.join("cambox.toml")).unwrap(),
                GOOD
            );
            let told = std::fs::read_to_string(data.join("import-error.txt")).unwrap();
            assert!(told.contains(why), "{told}");
        }
        std::fs::write(&boot, GOOD.replace("yard", "gate")).unwrap();
        import(&boot, &data).unwrap();
        assert!(
            !data.join("import-error.txt").exists(),
            "a good import clears the error"
        );
    }

    #[test]
    fn a_cut_before_the_rename_leaves_the_old_file_and_the_next_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cambox.toml");
        write_atomic(&path, b"old").unwrap();
        // What a power cut mid-write leaves: a half-written .new beside the old file.
        std::fs::write(dir.path().join("cambox.toml.new"), b"ne").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!dir.path().join("cambox.toml.new").exists());
    }

    #[test]
    fn no_file_on_the_boot_partition_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            import(&dir.path().join("missing.toml"), &dir.path().join("data")).unwrap(),
            Outcome::NoFile
        );
        assert!(!dir.path().join("data").exists());
    }

    #[test]
    fn open_networks_and_raw_keys() {
        let open = WifiConfig {
            ssid: "guest".into(),
            psk: None,
            country: None,
        };
        assert!(wpa_supplicant_conf(&open)
            .unwrap()
            .contains("key_mgmt=NONE"));
        let raw = WifiConfig {
            psk: Some("ab".repeat(32)),
            ..open
        };
        assert!(wpa_supplicant_conf(&raw)
            .unwrap()
            .contains(&format!("psk={}\n", "ab".repeat(32))));
    }
}
