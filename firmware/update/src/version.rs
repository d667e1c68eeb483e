//! Release versions: dot-separated whole numbers (`2026.12.1`, `1.4.0`), compared number by
//! number, so `1.10` is newer than `1.9`. Nothing else is accepted: a box must be able to
//! tell newer from older without guessing what a suffix means.

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(Vec<u64>);

impl Version {
    pub fn parse(s: &str) -> Result<Version, String> {
        let parts: Result<Vec<u64>, _> = s.trim().split('.').map(str::parse::<u64>).collect();
        match parts {
            Ok(p) if !p.is_empty() && p.len() <= 8 => Ok(Version(p)),
            _ => Err(format!(
                "version '{s}' is not dot-separated whole numbers (like 2026.12.1)"
            )),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        // Missing parts count as 0: 1.4 and 1.4.0 are the same release.
        let n = self.0.len().max(other.0.len());
        let at = |v: &Version, i: usize| v.0.get(i).copied().unwrap_or(0);
        (0..n)
            .map(|i| at(self, i).cmp(&at(other, i)))
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_compare_number_by_number() {
        assert!(v("1.10") > v("1.9"));
        assert!(v("2026.12.1") > v("2026.2.30"));
        assert_eq!(v("1.4").cmp(&v("1.4.0")), Ordering::Equal);
        assert!(v("1.4.1") > v("1.4"));
        assert_eq!(v(" 3.0.7 ").to_string(), "3.0.7");
        for bad in ["", "1.x", "1.4-rc1", "-1", "1..2", "1.2.3.4.5.6.7.8.9"] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
    }
}
