//! PostgreSQL data pages: LSNs as printed (`0/3000028`), the page header
//! fields a backup needs, and the page checksum (`checksum_impl.h`: 32
//! parallel FNV-1a-like sums over the page read as little-endian u32 words,
//! with the checksum field taken as zero, the block number mixed in, and the
//! result folded to 16 bits, never zero). Pure.

use crate::error::{Error, Result};

pub const PAGE_SIZE: usize = 8192;
/// Blocks per relation segment file (1 GiB of 8 KiB pages).
pub const RELSEG_BLOCKS: u32 = 131072;

/// Parses an LSN as PostgreSQL prints it: two hex numbers, `hi/lo`.
pub fn parse_lsn(s: &str) -> Result<u64> {
    let (hi, lo) = s
        .split_once('/')
        .ok_or_else(|| Error::invalid(format!("{s:?} is not an LSN")))?;
    let hi =
        u32::from_str_radix(hi, 16).map_err(|_| Error::invalid(format!("{s:?} is not an LSN")))?;
    let lo =
        u32::from_str_radix(lo, 16).map_err(|_| Error::invalid(format!("{s:?} is not an LSN")))?;
    Ok(((hi as u64) << 32) | lo as u64)
}

/// The LSN in a page header (`pd_lsn`).
pub fn page_lsn(page: &[u8]) -> u64 {
    let hi = u32::from_le_bytes(page[0..4].try_into().expect("4 bytes"));
    let lo = u32::from_le_bytes(page[4..8].try_into().expect("4 bytes"));
    ((hi as u64) << 32) | lo as u64
}

/// Whether `page` keeps a special space at its end (`pd_special` below the
/// page size), as every index access method's pages do (B-tree, hash,
/// GiST, GIN, SP-GiST, BRIN) and heap pages never do. False for a page too
/// short to have a header, or new.
pub fn has_special_space(page: &[u8]) -> bool {
    if page.len() < 24 || is_new(page) {
        return false;
    }
    let special = u16::from_le_bytes([page[16], page[17]]) as usize;
    special < page.len()
}

fn stored_checksum(page: &[u8]) -> u16 {
    u16::from_le_bytes([page[8], page[9]])
}

/// A new (never initialized) page has `pd_upper` = 0 and no checksum.
fn is_new(page: &[u8]) -> bool {
    u16::from_le_bytes([page[14], page[15]]) == 0
}

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16777619;
const BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

#[inline(always)]
fn comp(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

/// The checksum PostgreSQL computes for `page` as block `blkno` of its relation.
pub fn checksum(page: &[u8], blkno: u32) -> u16 {
    assert_eq!(page.len(), PAGE_SIZE);
    // Every page of a backup is checked: a few percent of a full backup's
    // CPU. The 32 lanes need a 32-bit vector multiply, which the baseline
    // x86-64 target (SSE2) lacks; the same loop compiled for AVX2 runs 1.4
    // times as fast, for AVX-512 1.9 times (`benches/pipeline.rs`, `page`).
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU was just found to support AVX-512F.
            return unsafe { checksum_avx512(page, blkno) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just found to support AVX2.
            return unsafe { checksum_avx2(page, blkno) };
        }
    }
    checksum_lanes(page, blkno)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn checksum_avx512(page: &[u8], blkno: u32) -> u16 {
    checksum_lanes(page, blkno)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn checksum_avx2(page: &[u8], blkno: u32) -> u16 {
    checksum_lanes(page, blkno)
}

#[inline(always)]
fn checksum_lanes(page: &[u8], blkno: u32) -> u16 {
    let mut sums = BASE_OFFSETS;
    // Rows of 32 words, one per lane; written so the compiler can keep the
    // 32 lanes in vector registers (the algorithm was made for that).
    let mut row = [0u32; N_SUMS];
    for (r, bytes) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (w, b) in row.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if r == 0 {
            // pd_checksum (bytes 8 and 9 of the page) counts as zero.
            row[2] &= 0xFFFF_0000;
        }
        for (sum, w) in sums.iter_mut().zip(row.iter()) {
            *sum = comp(*sum, *w);
        }
    }
    for _ in 0..2 {
        for sum in sums.iter_mut() {
            *sum = comp(*sum, 0);
        }
    }
    let folded = sums.iter().fold(0u32, |a, s| a ^ s) ^ blkno;
    ((folded % 65535) + 1) as u16
}

/// Whether a page read during a backup that started at `start_lsn` must be
/// reported: it is initialized, older than the backup (newer pages will be
/// rewritten by WAL replay, and may be torn mid-write), and its checksum is
/// wrong.
pub fn is_damaged(page: &[u8], blkno: u32, start_lsn: u64) -> bool {
    page.len() == PAGE_SIZE
        && !is_new(page)
        && page_lsn(page) < start_lsn
        && checksum(page, blkno) != stored_checksum(page)
}

/// The first block number of a relation segment file (`16384.2` → 2 × 131072).
pub fn first_block(file_name: &str) -> u32 {
    file_name
        .rsplit_once('.')
        .and_then(|(_, seg)| seg.parse::<u32>().ok())
        .map_or(0, |seg| seg.saturating_mul(RELSEG_BLOCKS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parsing() {
        assert_eq!(parse_lsn("0/3000028").unwrap(), 0x3000028);
        assert_eq!(parse_lsn("1/0").unwrap(), 1 << 32);
        assert!(parse_lsn("3000028").is_err());
    }

    #[test]
    fn index_pages_are_told_from_heap_pages_by_their_special_space() {
        let page = |upper: u16, special: u16| {
            let mut p = vec![0u8; PAGE_SIZE];
            p[14..16].copy_from_slice(&upper.to_le_bytes());
            p[16..18].copy_from_slice(&special.to_le_bytes());
            p
        };
        // A B-tree page: 16 bytes of special space (BTPageOpaqueData).
        assert!(has_special_space(&page(8000, 8176)));
        // A heap page: pd_special is the page size.
        assert!(!has_special_space(&page(8000, 8192)));
        // A new page, and a fragment with no header.
        assert!(!has_special_space(&page(0, 8176)));
        assert!(!has_special_space(&[0u8; 16]));
    }

    #[test]
    fn the_vector_checksum_equals_the_portable_one() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut page = vec![0u8; PAGE_SIZE];
        for blkno in [0u32, 1, 7, 131_071, u32::MAX] {
            for b in page.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let portable = checksum_lanes(&page, blkno);
            assert_eq!(checksum(&page, blkno), portable);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: checked just above.
                    assert_eq!(unsafe { checksum_avx2(&page, blkno) }, portable);
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: checked just above.
                    assert_eq!(unsafe { checksum_avx512(&page, blkno) }, portable);
                }
            }
        }
    }

    #[test]
    fn checksum_round_trip_and_detection() {
        let mut page = vec![0u8; PAGE_SIZE];
        for (i, b) in page.iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        page[0..8].copy_from_slice(&[0, 0, 0, 0, 0x28, 0, 0, 3]);
        page[14..16].copy_from_slice(&100u16.to_le_bytes());
        let c = checksum(&page, 5);
        page[8..10].copy_from_slice(&c.to_le_bytes());
        assert_eq!(
            checksum(&page, 5),
            c,
            "the stored checksum does not feed itself"
        );
        assert!(!is_damaged(&page, 5, u64::MAX));
        assert!(
            is_damaged(&page, 6, u64::MAX),
            "the block number is mixed in"
        );
        page[4000] ^= 1;
        assert!(is_damaged(&page, 5, u64::MAX));
        assert!(
            !is_damaged(&page, 5, 0),
            "pages newer than the backup start are skipped"
        );
        assert_eq!(first_block("16384.2"), 2 * RELSEG_BLOCKS);
        assert_eq!(first_block("16384_fsm"), 0);
    }
}
