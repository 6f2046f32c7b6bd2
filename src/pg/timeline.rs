//! Timeline history files (`TTTTTTTT.history`): each line of a history
//! names an ancestor timeline and the LSN at which its successor branched off
//! (`1<TAB>0/3000158<TAB>reason`). From them: which timeline
//! holds a given LSN on the way to a target timeline, and whether a backup
//! taken on one timeline can reach another. Pure.

use super::lsn::Lsn;
use crate::error::{Error, Result};

/// One timeline's ancestry, oldest first: timeline `tli` of an entry ran
/// until `end`, where the next one began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub timeline: u32,
    pub ancestors: Vec<Ancestor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestor {
    pub timeline: u32,
    pub end: Lsn,
}

impl History {
    /// Timeline 1 has no history file: it has no ancestors.
    pub fn first() -> History {
        History {
            timeline: 1,
            ancestors: vec![],
        }
    }

    /// Parses the history file of `timeline`.
    pub fn parse(timeline: u32, text: &str) -> Result<History> {
        let mut ancestors: Vec<Ancestor> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                Error::corrupt(format!(
                    "history file of timeline {timeline}, line {}: {line:?}",
                    i + 1
                ))
            };
            let mut fields = line.split_whitespace();
            let tli: u32 = fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
            let end = Lsn::parse(fields.next().ok_or_else(bad)?).map_err(|_| bad())?;
            if let Some(prev) = ancestors.last()
                && (tli <= prev.timeline || end < prev.end)
            {
                return Err(bad());
            }
            if tli >= timeline {
                return Err(bad());
            }
            ancestors.push(Ancestor { timeline: tli, end });
        }
        Ok(History {
            timeline,
            ancestors,
        })
    }

    /// The timeline that holds `lsn` on the way to this one: the ancestor
    /// that ran past it, or this timeline itself.
    pub fn timeline_at(&self, lsn: Lsn) -> u32 {
        self.ancestors
            .iter()
            .find(|a| lsn < a.end)
            .map(|a| a.timeline)
            .unwrap_or(self.timeline)
    }

    /// Where timeline `tli` begins on the way to this one: the end of its
    /// predecessor, or 0 for the first.
    pub fn begin_of(&self, tli: u32) -> Option<Lsn> {
        if tli == self.timeline {
            return Some(self.ancestors.last().map(|a| a.end).unwrap_or_default());
        }
        let i = self.ancestors.iter().position(|a| a.timeline == tli)?;
        Some(if i == 0 {
            Lsn(0)
        } else {
            self.ancestors[i - 1].end
        })
    }

    /// Whether a backup taken on `tli` that is consistent at `stop` lies on
    /// this timeline's path: `tli` is this timeline, or an ancestor that ran
    /// past `stop`.
    pub fn reaches(&self, tli: u32, stop: Lsn) -> bool {
        tli == self.timeline
            || self
                .ancestors
                .iter()
                .any(|a| a.timeline == tli && stop <= a.end)
    }

    /// The timeline whose segment file PostgreSQL reads for segment `segno`
    /// when recovering towards this timeline: the newest timeline that has
    /// begun by the segment's start or within it (a new timeline's first
    /// segment holds a copy of its parent's WAL up to the switch).
    pub fn timeline_of_segment(&self, segno: u64, seg_size: u64) -> u32 {
        let mut chosen = self
            .ancestors
            .first()
            .map(|a| a.timeline)
            .unwrap_or(self.timeline);
        let mut tlis: Vec<u32> = self.ancestors.iter().map(|a| a.timeline).collect();
        tlis.push(self.timeline);
        for tli in tlis {
            if let Some(begin) = self.begin_of(tli)
                && begin.segment(seg_size) <= segno
            {
                chosen = tli;
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    fn three() -> History {
        History::parse(
            3,
            "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tbefore 2026-11-22 10:00:00+00\n",
        )
        .unwrap()
    }

    #[test]
    fn parses_history() {
        let h = three();
        assert_eq!(h.ancestors.len(), 2);
        assert_eq!(h.ancestors[1].timeline, 2);
        assert_eq!(h.ancestors[1].end, Lsn::parse("0/5000000").unwrap());
    }

    #[test]
    fn refuses_bad_history() {
        assert!(History::parse(2, "x\t0/1\n").is_err());
        assert!(History::parse(2, "1\tnope\n").is_err());
        assert!(History::parse(2, "2\t0/1\n").is_err(), "its own timeline");
        assert!(
            History::parse(3, "2\t0/5\n1\t0/6\n").is_err(),
            "out of order"
        );
    }

    #[test]
    fn finds_timelines() {
        let h = three();
        assert_eq!(h.timeline_at(Lsn::parse("0/2000000").unwrap()), 1);
        assert_eq!(h.timeline_at(Lsn::parse("0/3000158").unwrap()), 2);
        assert_eq!(h.timeline_at(Lsn::parse("0/9000000").unwrap()), 3);
        assert!(h.reaches(1, Lsn::parse("0/3000000").unwrap()));
        assert!(!h.reaches(1, Lsn::parse("0/4000000").unwrap()));
        assert!(h.reaches(3, Lsn(u64::MAX)));
        assert!(!h.reaches(4, Lsn(0)));
        // Segment 3 holds the switch to 2: read from timeline 2.
        assert_eq!(h.timeline_of_segment(2, MB16), 1);
        assert_eq!(h.timeline_of_segment(3, MB16), 2);
        assert_eq!(h.timeline_of_segment(4, MB16), 2);
        assert_eq!(h.timeline_of_segment(5, MB16), 3);
        assert_eq!(History::first().timeline_of_segment(9, MB16), 1);
    }
}
