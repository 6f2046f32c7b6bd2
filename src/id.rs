//! The 32-byte identifiers that name everything in a repository: blob ids
//! (keyed BLAKE3 of the plaintext), pack ids (BLAKE3 of the pack bytes) and
//! the random ids of snapshots, keys and locks. This file owns their text form
//! (64 lowercase hex digits) and nothing about how they are derived.

use std::fmt;

use crate::error::{Error, Result};

/// A 32-byte identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    pub const LEN: usize = 32;

    /// A fresh random id, for objects named by chance rather than content.
    pub fn random() -> Id {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("the operating system's random source failed");
        Id(b)
    }

    /// The unkeyed BLAKE3 hash of `data`: names packs, whose bytes are
    /// already ciphertext, so hashing them reveals nothing.
    pub fn hash(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    /// [`Id::hash`] of everything `r` yields, read in 1 MiB pieces, and
    /// its length: hashes a pack without holding it in memory.
    pub fn hash_reader(mut r: impl std::io::Read) -> std::io::Result<(Id, u64)> {
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            h.update(&buf[..n]);
            len += n as u64;
        }
        Ok((Id(*h.finalize().as_bytes()), len))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown to people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    pub fn from_hex(s: &str) -> Result<Id> {
        let mut b = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut b).is_err() {
            return Err(Error::invalid(format!(
                "{s:?} is not an id (64 hexadecimal digits)"
            )));
        }
        Ok(Id(b))
    }

    pub fn from_slice(b: &[u8]) -> Result<Id> {
        let arr: [u8; 32] = b
            .try_into()
            .map_err(|_| Error::corrupt(format!("an id must be 32 bytes, found {}", b.len())))?;
        Ok(Id(arr))
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl serde::Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        Id::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_a_reader_is_hashing_its_bytes() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
        let (id, len) = Id::hash_reader(&data[..]).unwrap();
        assert_eq!((id, len), (Id::hash(&data), data.len() as u64));
    }

    #[test]
    fn hex_round_trip() {
        let id = Id::random();
        assert_eq!(Id::from_hex(&id.to_hex()).unwrap(), id);
        assert!(Id::from_hex("abc").is_err());
        assert!(Id::from_hex(&"zz".repeat(32)).is_err());
    }
}
