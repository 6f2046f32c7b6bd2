//! WAL files for tests that need no server: noise behind a valid first
//! page header, as `wal-push` checks it (PostgreSQL 15's page magic, the
//! address and timeline the name says, and the given system identifier).

/// `len` bytes (a WAL segment size) named `name`, for cluster `sysid`.
pub fn segment(name: &str, seed: u64, len: usize, sysid: u64) -> Vec<u8> {
    let mut b = super::tree::noise(seed, len);
    let timeline = u32::from_str_radix(&name[..8], 16).unwrap();
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    let segno = log * (0x1_0000_0000 / len as u64) + seg;
    b[..40].fill(0);
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes()); // PostgreSQL 15
    b[2..4].copy_from_slice(&0x0002u16.to_le_bytes()); // XLP_LONG_HEADER
    b[4..8].copy_from_slice(&timeline.to_le_bytes());
    b[8..16].copy_from_slice(&(segno * len as u64).to_le_bytes());
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    b[32..36].copy_from_slice(&(len as u32).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b
}
