//! Cutting a byte stream into chunks: FastCDC (2020) with the repository's
//! secret gear seed, so chunk boundaries, and with them chunk sizes, depend on
//! a key an observer does not have. The sizes are fixed per repository in its
//! config (`repo-format/chunking.md`). This file reads from any `Read`; it
//! knows nothing of files, ids or sealing.

use std::io::Read;

use fastcdc::v2020::{Normalization, StreamCDC};

use crate::error::{Error, Result};

/// Chunker parameters, stored in the repository config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerParams {
    pub algorithm: String,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
    /// XORed into FastCDC's gear table; secret, like everything in the config.
    pub seed: u64,
}

impl ChunkerParams {
    pub const ALGORITHM: &'static str = "fastcdc-2020";

    /// The defaults for a new repository: 32 KiB / 64 KiB / 512 KiB and a
    /// random seed. Databases and images change in place, in scattered
    /// small writes, and every write rewrites the whole chunk around it: after
    /// 5% of a 1 GiB tree was overwritten in 64 KiB runs, a 512 KiB average
    /// stored 0.57 of the first backup again, 128 KiB 0.26, 64 KiB 0.19, at
    /// the same speed and with less memory (benches/README.md).
    pub fn generate() -> ChunkerParams {
        let mut seed = [0u8; 8];
        crate::seal::random_bytes(&mut seed);
        ChunkerParams {
            algorithm: Self::ALGORITHM.into(),
            min_size: 32 * 1024,
            avg_size: 64 * 1024,
            max_size: 512 * 1024,
            seed: u64::from_le_bytes(seed),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.algorithm != Self::ALGORITHM {
            return Err(Error::unsupported(format!(
                "chunker {:?} is not supported",
                self.algorithm
            )));
        }
        let ok = (64..=1 << 20).contains(&self.min_size)
            && (256..=4 << 20).contains(&self.avg_size)
            && (1024..=16 << 20).contains(&self.max_size)
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.min_size.is_multiple_of(2)
            && self.avg_size.is_multiple_of(2)
            && self.max_size.is_multiple_of(2);
        if !ok {
            return Err(Error::corrupt(format!(
                "chunker sizes out of range: {self:?}"
            )));
        }
        Ok(())
    }

    /// Chunks of `reader` in order; their concatenation is the input.
    pub fn chunks<R: Read>(&self, reader: R) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
        StreamCDC::with_level_and_seed(
            reader,
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
            Normalization::Level1,
            self.seed,
        )
        .map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => io,
                other => std::io::Error::other(other.to_string()),
            })
        })
    }
}

/// Fixed-size blocks of `reader` (the last may be shorter): for files made of
/// pages, so that a changed page changes exactly one block.
pub fn fixed_blocks<R: Read>(
    mut reader: R,
    size: usize,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut buf = vec![0u8; size];
        let mut filled = 0;
        while filled < size {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    done = true;
                    return Some(Err(e));
                }
            }
        }
        if filled < size {
            done = true;
            if filled == 0 {
                return None;
            }
            buf.truncate(filled);
        }
        Some(Ok(buf))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64) -> ChunkerParams {
        ChunkerParams {
            algorithm: ChunkerParams::ALGORITHM.into(),
            min_size: 4096,
            avg_size: 16384,
            max_size: 65536,
            seed,
        }
    }

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x9e3779b97f4a7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_concatenate_to_input_and_respect_limits() {
        let d = data(1 << 20);
        let p = params(7);
        let cs: Vec<_> = p.chunks(&d[..]).map(|c| c.unwrap()).collect();
        assert!(cs.len() > 10);
        assert_eq!(cs.concat(), d);
        for c in &cs[..cs.len() - 1] {
            assert!(c.len() >= 4096 && c.len() <= 65536);
        }
    }

    #[test]
    fn seed_changes_boundaries() {
        let d = data(1 << 20);
        let a: Vec<usize> = params(1).chunks(&d[..]).map(|c| c.unwrap().len()).collect();
        let b: Vec<usize> = params(2).chunks(&d[..]).map(|c| c.unwrap().len()).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn insertion_keeps_later_chunks() {
        let d = data(1 << 20);
        let mut e = d.clone();
        e.splice(1000..1000, b"inserted bytes".iter().copied());
        let p = params(3);
        let a: std::collections::HashSet<Vec<u8>> = p.chunks(&d[..]).map(|c| c.unwrap()).collect();
        let b: Vec<Vec<u8>> = p.chunks(&e[..]).map(|c| c.unwrap()).collect();
        let shared = b.iter().filter(|c| a.contains(*c)).count();
        assert!(
            shared + 2 >= b.len(),
            "only the chunks around the edit change"
        );
    }

    #[test]
    fn fixed_blocks_cover_the_input() {
        let d = data(3 * 8192 + 100);
        let b: Vec<Vec<u8>> = fixed_blocks(&d[..], 8192).map(|c| c.unwrap()).collect();
        assert_eq!(
            b.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![8192, 8192, 8192, 100]
        );
        assert_eq!(b.concat(), d);
        assert_eq!(fixed_blocks(&[][..], 8192).count(), 0);
    }

    #[test]
    fn validate_rejects_nonsense() {
        let mut p = params(0);
        assert!(p.validate().is_ok());
        p.min_size = p.max_size * 2;
        assert!(p.validate().is_err());
    }
}
