//! Reading blobs back: locating a blob through the catalog, fetching its
//! envelope from its pack, opening it and checking its id before anyone
//! sees a byte. Trees are blobs too.

use crate::catalog::BlobLocation;
use crate::error::{Error, Result};
use crate::format::tree::Tree;
use crate::format::{BlobType, layout};
use crate::id::Id;

use super::Repo;

/// The most bytes between two blobs that [`Repo::read_blobs`] reads past
/// to get both with one request.
const READ_GAP: u64 = 256 << 10;
/// The most one of its requests reads.
const READ_MAX: u64 = 32 << 20;

/// How errors name a blob.
fn blob_in_pack(id: &Id, loc: &BlobLocation) -> String {
    format!("blob {id} in pack {}", loc.pack)
}

impl Repo {
    pub fn locate(&self, id: &Id) -> Result<BlobLocation> {
        // Whoever asks found the id in a snapshot, tree or record, so its
        // absence is damage (a lost or unreadable index file).
        self.catalog.lookup(id)?.ok_or_else(|| {
            Error::corrupt(format!(
                "blob {id} is not in any readable index file of the repository"
            ))
        })
    }

    /// Opens a blob envelope read from a pack and checks its id.
    pub fn open_blob(&self, id: &Id, loc: &BlobLocation, envelope: &[u8]) -> Result<Vec<u8>> {
        let plain = self
            .key
            .open(loc.blob_type.seal_kind(), &id.0, envelope)
            .map_err(|e| e.context(blob_in_pack(id, loc)))?;
        self.check_blob(id, loc, &plain)?;
        Ok(plain)
    }

    /// `plain`, opened from blob `id`'s envelope, has the length its
    /// location records and hashes to `id`.
    fn check_blob(&self, id: &Id, loc: &BlobLocation, plain: &[u8]) -> Result<()> {
        if plain.len() != loc.raw_length as usize
            || self.key.blob_id(loc.blob_type.seal_kind(), plain) != *id
        {
            return Err(Error::corrupt(format!(
                "{}: content does not match its id",
                blob_in_pack(id, loc)
            )));
        }
        Ok(())
    }

    /// As [`Repo::open_blob`], into `out`, which must be exactly the
    /// blob's length; decrypts `envelope` where it lies. For readers that
    /// reuse one buffer from blob to blob.
    pub fn open_blob_to(
        &self,
        id: &Id,
        loc: &BlobLocation,
        envelope: &mut [u8],
        out: &mut [u8],
    ) -> Result<()> {
        if out.len() != loc.raw_length as usize {
            return Err(Error::corrupt(format!(
                "{}: {} bytes, room for {}",
                blob_in_pack(id, loc),
                loc.raw_length,
                out.len()
            )));
        }
        self.key
            .open_to(loc.blob_type.seal_kind(), &id.0, envelope, out)
            .map_err(|e| e.context(blob_in_pack(id, loc)))?;
        self.check_blob(id, loc, out)
    }

    /// Reads one blob, verified.
    pub async fn read_blob(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        let env = self
            .store
            .get_range(
                &layout::pack(&loc.pack),
                loc.offset as u64,
                loc.length as u64,
            )
            .await
            .map_err(|e| e.context(format!("blob {id}")))?;
        self.open_blob(id, &loc, &env)
    }

    /// Reads `ids`, verified, in the order given. Blobs that lie close
    /// together in one pack, as a file's map pieces or list blobs do, come
    /// with one ranged read: a gap of up to [`READ_GAP`] is read and
    /// dropped rather than paid for with another request.
    pub async fn read_blobs(&self, ids: &[Id]) -> Result<Vec<Vec<u8>>> {
        let locs: Vec<BlobLocation> = ids
            .iter()
            .map(|id| self.locate(id))
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(ids.len());
        let mut i = 0;
        while i < ids.len() {
            let first = &locs[i];
            let start = first.offset as u64;
            let mut end = start + first.length as u64;
            let mut j = i + 1;
            while j < ids.len() {
                let l = &locs[j];
                let (o, e) = (l.offset as u64, l.offset as u64 + l.length as u64);
                if l.pack != first.pack || o < start || o > end + READ_GAP || e - start > READ_MAX {
                    break;
                }
                end = end.max(e);
                j += 1;
            }
            let bytes = self
                .store
                .get_range(&layout::pack(&first.pack), start, end - start)
                .await
                .map_err(|e| e.context(format!("blob {}", ids[i])))?;
            for k in i..j {
                let at = (locs[k].offset as u64 - start) as usize;
                let env = &bytes[at..at + locs[k].length as usize];
                out.push(self.open_blob(&ids[k], &locs[k], env)?);
            }
            i = j;
        }
        Ok(out)
    }

    pub async fn read_tree(&self, id: &Id) -> Result<Tree> {
        let loc = self.locate(id)?;
        if loc.blob_type != BlobType::Tree {
            return Err(Error::corrupt(format!("blob {id} is not a tree")));
        }
        Tree::decode(&self.read_blob(id).await?).map_err(|e| e.context(format!("tree {id}")))
    }
}
