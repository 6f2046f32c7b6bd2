//! Verification records (`repo-format/verified.md`): when each pack was
//! last read back whole and found sound by `verify --read-data[-subset]`,
//! at `verified/<id>`, sealed (kind `V`, name = the random id), JSON. The
//! record lives in the repository, not in a cache, so a lost catalog does
//! not restart the rolling read from zero and a verify run on another
//! machine counts too. Each run writes one record holding everything the
//! records it read held plus its own packs, then removes those it read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub version: u32,
    /// When the run that wrote it ended, RFC 3339 UTC.
    pub time: String,
    pub host: String,
    /// Pack id (hex) → when it was last read back and found sound, in Unix
    /// seconds. A pack missing from the map was never verified.
    pub packs: BTreeMap<String, i64>,
}

impl Verified {
    pub fn encode(&self) -> Vec<u8> {
        super::to_json(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Verified> {
        let v: Verified = super::from_json("verification record", bytes)?;
        if v.version != super::VERSION {
            return Err(Error::unsupported(format!(
                "verification record version {}",
                v.version
            )));
        }
        if let Some(bad) = v.packs.keys().find(|k| Id::from_hex(k).is_err()) {
            return Err(Error::corrupt(format!(
                "verification record: {bad:?} is not a pack id"
            )));
        }
        Ok(v)
    }

    /// The packs and their times, as ids.
    pub fn times(&self) -> impl Iterator<Item = (Id, i64)> + '_ {
        self.packs
            .iter()
            .filter_map(|(k, t)| Id::from_hex(k).ok().map(|id| (id, *t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut packs = BTreeMap::new();
        packs.insert(Id([7; 32]).to_hex(), 1_700_000_000);
        let v = Verified {
            version: crate::format::VERSION,
            time: "2026-12-02T00:00:00.000000000Z".into(),
            host: "h".into(),
            packs,
        };
        let back = Verified::decode(&v.encode()).unwrap();
        assert_eq!(back, v);
        assert_eq!(
            back.times().collect::<Vec<_>>(),
            [(Id([7; 32]), 1_700_000_000)]
        );
        let mut bad = v.clone();
        bad.packs.insert("xyz".into(), 1);
        assert!(Verified::decode(&bad.encode()).is_err());
        let mut old = v;
        old.version = 1;
        assert!(Verified::decode(&old.encode()).is_err());
    }
}
