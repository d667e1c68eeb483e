//! The audit log: who watched which stream from when to when, and who pressed what, on the
//! data partition, for the people filmed and their works council. One JSON object a line,
//! so `cambox audit` (and grep) read it; bounded in size and age, because a record of who
//! watched is itself personal data and must not pile up: two files, the current one and
//! the one before, each at most half the size, and none older than the age limit.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When, Unix seconds (for a watch: when it ended).
    pub at: u64,
    /// `watch` (with `from`), `live`, `button`, `command`, `login`.
    pub event: String,
    /// The person (or `anonymous` on a box without logins, `box button` for the button).
    pub who: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// When a watch began, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Record {
    pub fn new(event: &str, who: &str) -> Record {
        Record {
            at: unix(SystemTime::now()),
            event: event.into(),
            who: who.into(),
            via: None,
            site: None,
            protocol: None,
            stream: None,
            from: None,
            detail: None,
        }
    }
}

impl Record {
    /// A record of `event` done by `person` (anonymous on a box without logins).
    pub fn by(event: &str, person: Option<&crate::auth::sessions::Person>) -> Record {
        let mut r = Record::new(event, person.map_or("anonymous", |p| p.name.as_str()));
        r.via = Some(person.map_or("anonymous", |p| p.via).into());
        r
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Record {
        self.detail = Some(detail.into());
        self
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Default limits: two days, 4 MiB.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(48 * 3600);
pub const DEFAULT_MAX_BYTES: u64 = 4 << 20;

#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    /// Serialises writers, and remembers when the current file began.
    current_from: Mutex<Option<u64>>,
}

impl AuditLog {
    pub fn new(path: PathBuf, max_bytes: u64, max_age: Duration) -> AuditLog {
        AuditLog {
            path,
            max_bytes: max_bytes.max(4096),
            max_age,
            current_from: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` (after the pruning that keeps the log within its bounds). A log
    /// that cannot be written is reported, never fatal: the box keeps streaming.
    pub fn record(&self, record: &Record) {
        let mut from = self.current_from.lock().unwrap_or_else(|p| p.into_inner());
        self.prune_locked(&mut from, record.at);
        let line = serde_json::to_string(record).unwrap_or_default();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| writeln!(f, "{line}"));
        match written {
            Ok(()) => {
                from.get_or_insert(record.at);
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), "cannot write the audit log: {e}")
            }
        }
    }

    /// Drops what is past the age limit; for a box that records nothing for a while.
    pub fn prune(&self, now: SystemTime) {
        let mut from = self.current_from.lock().unwrap_or_else(|p| p.into_inner());
        self.prune_locked(&mut from, unix(now));
    }

    fn previous(&self) -> PathBuf {
        previous_of(&self.path)
    }

    /// The previous file goes once its newest record is half the age limit old; the
    /// current file becomes the previous one once its oldest record is, or once it holds
    /// half the size limit. So no record outlives the age limit, and the two files stay
    /// under the size limit.
    fn prune_locked(&self, from: &mut Option<u64>, now: u64) {
        let half_age = self.max_age.as_secs() / 2;
        let previous = self.previous();
        let old = |p: &Path| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.saturating_sub(unix(t)) > half_age)
        };
        if old(&previous) {
            let _ = std::fs::remove_file(&previous);
        }
        if from.is_none() {
            *from = first_record_at(&self.path);
        }
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        let aged = from.is_some_and(|f| now.saturating_sub(f) > half_age);
        if size > 0 && (aged || size >= self.max_bytes / 2) {
            if let Err(e) = std::fs::rename(&self.path, &previous) {
                tracing::warn!(path = %self.path.display(), "cannot rotate the audit log: {e}");
            }
            *from = None;
            if old(&previous) {
                let _ = std::fs::remove_file(&previous);
            }
        }
    }
}

/// Whether the rotated-out file of the log at `path` is there.
pub fn previous_exists(path: &Path) -> bool {
    previous_of(path).exists()
}

fn previous_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

fn first_record_at(path: &Path) -> Option<u64> {
    let f = std::fs::File::open(path).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(f).read_line(&mut line).ok()?;
    serde_json::from_str::<Record>(&line).ok().map(|r| r.at)
}

/// Every record of the log at `path` (the previous file first) no older than `max_age`;
/// lines that are not records (a torn last line after a power cut) are skipped.
pub fn read(path: &Path, max_age: Duration, now: SystemTime) -> std::io::Result<Vec<Record>> {
    let oldest = unix(now).saturating_sub(max_age.as_secs());
    let mut out = Vec::new();
    for p in [previous_of(path), path.to_owned()] {
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in std::io::BufReader::new(f).lines() {
            if let Ok(r) = serde_json::from_str::<Record>(&line?) {
                if r.at >= oldest {
                    out.push(r);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(event: &str, t: u64) -> Record {
        Record {
            at: t,
            ..Record::new(event, "alice")
        }
    }

    #[test]
    fn records_come_back_in_order_and_old_ones_are_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(
            dir.path().join("audit.log"),
            1 << 20,
            Duration::from_secs(3600),
        );
        let now = unix(SystemTime::now());
        log.record(&at("live", now - 10));
        log.record(&at("watch", now));
        let got = read(log.path(), Duration::from_secs(3600), SystemTime::now()).unwrap();
        assert_eq!(
            got.iter().map(|r| r.event.as_str()).collect::<Vec<_>>(),
            ["live", "watch"]
        );
        let recent = read(log.path(), Duration::from_secs(5), SystemTime::now()).unwrap();
        assert_eq!(recent.len(), 1);
    }

    #[test]
    fn the_log_stays_within_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::new(path.clone(), 8192, Duration::from_secs(3600));
        let now = unix(SystemTime::now());
        for i in 0..2000 {
            log.record(&Record {
                detail: Some(format!("press {i}")),
                ..at("button", now)
            });
        }
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        assert!(size(&path) + size(&previous_of(&path)) <= 8192 + 200);
        let got = read(&path, Duration::from_secs(3600), SystemTime::now()).unwrap();
        assert_eq!(
            got.last().unwrap().detail.as_deref(),
            Some("press 1999"),
            "the newest stay"
        );
        assert!(got.len() < 2000);
    }

    #[test]
    fn a_file_past_half_the_age_limit_is_rotated_and_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::new(path.clone(), 1 << 20, Duration::from_secs(100));
        let now = unix(SystemTime::now());
        log.record(&at("watch", now - 60));
        // The first record is 60 s old, over half the limit: the next write rotates.
        log.record(&at("live", now));
        assert!(previous_of(&path).exists());
        let got = read(&path, Duration::from_secs(100), SystemTime::now()).unwrap();
        assert_eq!(got.len(), 2);
        // A previous file whose newest record is over half the limit old goes.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(previous_of(&path))
            .unwrap()
            .set_modified(old)
            .unwrap();
        log.prune(SystemTime::now());
        assert!(!previous_of(&path).exists());
    }

    #[test]
    fn a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let now = unix(SystemTime::now());
        std::fs::write(
            &path,
            format!(
                "{}\n{{\"at\": 1",
                serde_json::to_string(&at("live", now)).unwrap()
            ),
        )
        .unwrap();
        assert_eq!(
            read(&path, Duration::from_secs(60), SystemTime::now())
                .unwrap()
                .len(),
            1
        );
    }
}
