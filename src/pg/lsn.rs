//! Log sequence numbers and WAL segment arithmetic: an LSN as PostgreSQL
//! prints it (`16/B374D848`), which segment holds it, and the segment file
//! name on a timeline (`TTTTTTTTXXXXXXXXYYYYYYYY`, where X and Y are the
//! segment number split at 4 GiB of WAL, so the split depends on the segment
//! size). Pure; the segment size is always a parameter.

use crate::error::{Error, Result};

/// A position in the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses `hi/lo`, two hex numbers of at most 8 digits each.
    pub fn parse(s: &str) -> Result<Lsn> {
        let bad = || Error::invalid(format!("{s:?} is not an LSN (like 0/3000028)"));
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let part = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(bad());
            }
            u32::from_str_radix(p, 16).map_err(|_| bad())
        };
        Ok(Lsn(((part(hi)? as u64) << 32) | part(lo)? as u64))
    }

    /// The number of the segment holding this LSN.
    pub fn segment(self, seg_size: u64) -> u64 {
        self.0 / seg_size
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Segments per 4 GiB "xlogid", the unit of the middle part of a file name.
fn per_xlogid(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

/// The file name of segment `segno` on `timeline`.
pub fn segment_name(timeline: u32, segno: u64, seg_size: u64) -> String {
    let n = per_xlogid(seg_size);
    format!("{timeline:08X}{:08X}{:08X}", segno / n, segno % n)
}

/// The segment number a segment file name (24 hex digits, any suffix
/// ignored) stands for.
pub fn segment_number(name: &str, seg_size: u64) -> Result<u64> {
    let bad = || Error::invalid(format!("{name:?} is not a WAL segment name"));
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
    if name.len() < 24 {
        return Err(bad());
    }
    let (hi, lo) = (hex(&name[8..16])?, hex(&name[16..24])?);
    if lo >= per_xlogid(seg_size) {
        return Err(bad());
    }
    Ok(hi * per_xlogid(seg_size) + lo)
}

/// Whether `seg_size` is one PostgreSQL allows: a power of two from 1 MiB to
/// 1 GiB.
pub fn valid_segment_size(seg_size: u64) -> bool {
    seg_size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&seg_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;

    #[test]
    fn parses_and_prints() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/0").unwrap(), Lsn(0));
        for bad in ["", "0", "/1", "1/", "x/1", "123456789/0", "0/1 2"] {
            assert!(Lsn::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_segments_like_postgres() {
        // 0/3000028 with 16 MiB segments is in segment 3.
        let l = Lsn::parse("0/3000028").unwrap();
        assert_eq!(l.segment(MB16), 3);
        assert_eq!(segment_name(1, 3, MB16), "000000010000000000000003");
        // 256 segments of 16 MiB per xlogid: segment 256 is 1/0.
        assert_eq!(segment_name(2, 256, MB16), "000000020000000100000000");
        assert_eq!(
            segment_number("000000020000000100000000", MB16).unwrap(),
            256
        );
        // 1 MiB segments: 4096 per xlogid.
        assert_eq!(segment_name(1, 4097, 1 << 20), "000000010000000100000001");
        assert_eq!(
            segment_number("000000010000000100000001.partial", 1 << 20).unwrap(),
            4097
        );
        assert!(segment_number("000000010000000000000100", MB16).is_err());
        assert!(valid_segment_size(MB16) && !valid_segment_size(3 << 20));
    }
}
