//! Packs (`repo-format/pack.md`): many sealed blobs in one object, because
//! object stores bill per request. Layout:
//!
//! ```text
//! blob envelope 0 || … || blob envelope n-1 || header envelope || header_len: u32 LE
//! ```
//!
//! The header (sealed, kind `H`, empty name, never compressed) lists every
//! blob in order: `version: u8 = 1`, then per blob `type: u8`, `length: u32`
//! (envelope bytes), `raw_length: u32` (plaintext bytes), `id: [32]`. Offsets
//! follow from the lengths. The pack is named by the BLAKE3 hash of all its
//! bytes. The header lets a lost index be rebuilt from the packs alone.

use crate::error::{Error, Result};
use crate::id::Id;
use crate::seal::{Compression, Kind, MasterKey};

use super::BlobType;

const HEADER_VERSION: u8 = 1;
const ENTRY_LEN: usize = 1 + 4 + 4 + 32;

/// Where one blob sits in a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackEntry {
    pub blob_type: BlobType,
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

/// Collects sealed blobs into one pack.
#[derive(Default)]
pub struct PackBuilder {
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose buffer already holds `bytes`, so filling it never
    /// moves what it holds.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            entries: Vec::new(),
        }
    }

    /// A builder whose buffer already holds blobs end to end: `body`, as
    /// `entries` (in order, from offset 0) describe it.
    pub fn from_body(body: Vec<u8>, entries: Vec<PackEntry>) -> Self {
        debug_assert_eq!(
            entries.iter().map(|e| e.length as usize).sum::<usize>(),
            body.len(),
            "the entries cover the body"
        );
        Self {
            bytes: body,
            entries,
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add(&mut self, blob_type: BlobType, id: Id, raw_length: u32, envelope: &[u8]) {
        self.entries.push(PackEntry {
            blob_type,
            id,
            offset: self.bytes.len() as u32,
            length: envelope.len() as u32,
            raw_length,
        });
        self.bytes.extend_from_slice(envelope);
    }

    /// Seals the header onto the pack and returns its id, bytes and entries.
    pub fn finish(mut self, key: &MasterKey) -> (Id, Vec<u8>, Vec<PackEntry>) {
        let header = encode_header(&self.entries);
        let sealed = key.seal(Kind::PackHeader, b"", &header, Compression::None);
        self.bytes.extend_from_slice(&sealed);
        self.bytes
            .extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        (Id::hash(&self.bytes), self.bytes, self.entries)
    }
}

fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut h = Vec::with_capacity(1 + entries.len() * ENTRY_LEN);
    h.push(HEADER_VERSION);
    for e in entries {
        h.push(e.blob_type.byte());
        h.extend_from_slice(&e.length.to_le_bytes());
        h.extend_from_slice(&e.raw_length.to_le_bytes());
        h.extend_from_slice(&e.id.0);
    }
    h
}

/// The size of the trailing header envelope, read from a pack's last 4 bytes.
pub fn header_length(trailer: &[u8]) -> Result<u32> {
    let b: [u8; 4] = trailer
        .try_into()
        .map_err(|_| Error::corrupt("pack trailer is not 4 bytes"))?;
    Ok(u32::from_le_bytes(b))
}

/// Opens a pack header envelope and lists the blobs it describes.
pub fn decode_header(key: &MasterKey, envelope: &[u8]) -> Result<Vec<PackEntry>> {
    let h = key
        .open(Kind::PackHeader, b"", envelope)
        .map_err(|e| e.context("pack header"))?;
    let mut r = super::Reader::new("pack header", &h);
    let v = r.u8()?;
    if v != HEADER_VERSION {
        return Err(Error::unsupported(format!("pack header version {v}")));
    }
    let mut entries = Vec::new();
    let mut offset = 0u64;
    while !r.is_empty() {
        let blob_type = BlobType::from_byte(r.u8()?)?;
        let length = r.u32()?;
        let raw_length = r.u32()?;
        let id = r.id()?;
        entries.push(PackEntry {
            blob_type,
            id,
            offset: offset as u32,
            length,
            raw_length,
        });
        offset += length as u64;
    }
    Ok(entries)
}

/// Parses a whole pack: checks its name, trailer and header.
pub fn decode(key: &MasterKey, expected: &Id, bytes: &[u8]) -> Result<Vec<PackEntry>> {
    if Id::hash(bytes) != *expected {
        return Err(Error::corrupt(format!(
            "pack {expected}: content does not match its name"
        )));
    }
    if bytes.len() < 4 {
        return Err(Error::corrupt(format!("pack {expected} is truncated")));
    }
    let hl = header_length(&bytes[bytes.len() - 4..])? as usize;
    if hl + 4 > bytes.len() {
        return Err(Error::corrupt(format!(
            "pack {expected}: header length {hl} exceeds the pack"
        )));
    }
    let start = bytes.len() - 4 - hl;
    let entries = decode_header(key, &bytes[start..bytes.len() - 4])
        .map_err(|e| e.context(format!("pack {expected}")))?;
    let end = entries
        .last()
        .map(|e| e.offset as usize + e.length as usize)
        .unwrap_or(0);
    if end != start {
        return Err(Error::corrupt(format!(
            "pack {expected}: header does not cover the pack's blobs"
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_round_trip() {
        let k = MasterKey::generate();
        let mut b = PackBuilder::new();
        let mut ids = vec![];
        for i in 0..5u8 {
            let data = vec![i; 1000 + i as usize];
            let id = k.blob_id(Kind::DataBlob, &data);
            let env = k.seal(Kind::DataBlob, &id.0, &data, Compression::Zstd(1));
            b.add(BlobType::Data, id, data.len() as u32, &env);
            ids.push((id, data));
        }
        let (pid, bytes, entries) = b.finish(&k);
        let parsed = decode(&k, &pid, &bytes).unwrap();
        assert_eq!(parsed, entries);
        for (e, (id, data)) in parsed.iter().zip(&ids) {
            assert_eq!(e.id, *id);
            let env = &bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&k.open(Kind::DataBlob, &id.0, env).unwrap(), data);
        }
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        assert!(decode(&k, &pid, &bad).is_err());
    }
}
