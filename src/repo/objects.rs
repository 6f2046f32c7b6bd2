//! The one path by which sealed objects (config, index files, snapshots,
//! locks, WAL records, restore points) are written and read: sealed under
//! the master key with the kind and name [`Object`] assigns them, and
//! opened with the same binding, so an object stored under one name can
//! never be read as another. Packs and their blobs go through the write
//! session and the blob reader instead.

use crate::error::{Error, Kind, Result};
use crate::format::layout::Object;
use crate::seal::Compression;

use super::Repo;

impl Repo {
    /// Seals `plain` for `obj`.
    pub fn seal_object(&self, obj: &Object<'_>, plain: &[u8], c: Compression) -> Vec<u8> {
        self.key().seal(obj.seal_kind(), &obj.aad_name(), plain, c)
    }

    /// Stores `obj`, replacing what is there.
    pub async fn put_object(&self, obj: &Object<'_>, plain: &[u8], c: Compression) -> Result<()> {
        let sealed = self.seal_object(obj, plain, c);
        self.store().put(&obj.name(), sealed).await
    }

    /// Stores `obj` only if nothing has its name (`Conflict` otherwise).
    pub async fn put_new_object(
        &self,
        obj: &Object<'_>,
        plain: &[u8],
        c: Compression,
    ) -> Result<()> {
        let sealed = self.seal_object(obj, plain, c);
        self.store().put_new(&obj.name(), sealed).await
    }

    /// Reads and opens `obj`. A missing object is `NotFound`; one that
    /// fails authentication is `Corrupt`, named.
    pub async fn get_object(&self, obj: &Object<'_>) -> Result<Vec<u8>> {
        let name = obj.name();
        let sealed = self.store().get(&name).await.map_err(|e| match e.kind() {
            Kind::NotFound => Error::not_found(format!("{} is missing", obj.describe())),
            _ => e,
        })?;
        self.key()
            .open(obj.seal_kind(), &obj.aad_name(), &sealed)
            .map_err(|e| e.context(obj.describe()))
    }
}
