//! WAL file names as PostgreSQL's archiver hands them to `archive_command`
//! (`%f`): segments `TTTTTTTTXXXXXXXXYYYYYYYY`, their `.partial` form left at
//! a promotion, timeline history files `TTTTTTTT.history`, and backup history
//! files `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`. Parsing is strict: a WAL
//! name becomes part of an object name, so anything else is refused.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalKind {
    Segment,
    Partial,
    History,
    Backup,
}

/// A validated WAL file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalName {
    pub kind: WalKind,
    pub timeline: u32,
    name: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalName {
    pub fn parse(name: &str) -> Result<WalName> {
        let bad = || {
            Error::invalid(format!(
                "{name:?} is not a WAL file name (segment, .partial, .history or .backup)"
            ))
        };
        let (kind, stem) = if let Some(s) = name.strip_suffix(".history") {
            (WalKind::History, s)
        } else if let Some(s) = name.strip_suffix(".partial") {
            (WalKind::Partial, s)
        } else if let Some(s) = name.strip_suffix(".backup") {
            let (seg, off) = s.split_once('.').ok_or_else(bad)?;
            if !is_hex(off, 8) {
                return Err(bad());
            }
            (WalKind::Backup, seg)
        } else {
            (WalKind::Segment, name)
        };
        let ok = match kind {
            WalKind::History => is_hex(stem, 8),
            _ => is_hex(stem, 24),
        };
        if !ok {
            return Err(bad());
        }
        let timeline = u32::from_str_radix(&stem[..8], 16).map_err(|_| bad())?;
        if timeline == 0 {
            return Err(bad());
        }
        Ok(WalName {
            kind,
            timeline,
            name: name.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for WalName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let s = WalName::parse("000000010000000000000003").unwrap();
        assert_eq!((s.kind, s.timeline), (WalKind::Segment, 1));
        assert_eq!(
            WalName::parse("00000002.history").unwrap().kind,
            WalKind::History
        );
        assert_eq!(
            WalName::parse("0000000A0000000000000003.partial")
                .unwrap()
                .timeline,
            10
        );
        let b = WalName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(b.kind, WalKind::Backup);
    }

    #[test]
    fn refuses_anything_else() {
        for n in [
            "",
            "../000000010000000000000003",
            "000000010000000000000003/x",
            "00000001000000000000000g",
            "000000010000000000000003.tmp",
            "00000000.history",
            "000000010000000000000003.0028.backup",
            "0000000100000000000000031",
        ] {
            assert!(WalName::parse(n).is_err(), "{n:?}");
        }
    }
}
