//! Reading blobs back: locating a blob through the catalog, fetching its
//! envelope from its pack, opening it and checking its id before anyone
//! sees a byte. Trees are blobs too.

use crate::catalog::BlobLocation;
use crate::error::{Error, Result};
use crate::format::tree::Tree;
use crate::format::{BlobType, layout};
use crate::id::Id;

use super::Repo;

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
        let what = || format!("blob {id} in pack {}", loc.pack);
        let plain = self
            .key
            .open(loc.blob_type.seal_kind(), &id.0, envelope)
            .map_err(|e| e.context(what()))?;
        if plain.len() != loc.raw_length as usize
            || self.key.blob_id(loc.blob_type.seal_kind(), &plain) != *id
        {
            return Err(Error::corrupt(format!(
                "{}: content does not match its id",
                what()
            )));
        }
        Ok(plain)
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

    pub async fn read_tree(&self, id: &Id) -> Result<Tree> {
        let loc = self.locate(id)?;
        if loc.blob_type != BlobType::Tree {
            return Err(Error::corrupt(format!("blob {id} is not a tree")));
        }
        Tree::decode(&self.read_blob(id).await?).map_err(|e| e.context(format!("tree {id}")))
    }
}
