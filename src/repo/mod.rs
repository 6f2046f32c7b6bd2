//! The repository: opening it with a password (key files → master key →
//! config), keeping the local catalog in step with the index files and
//! snapshots, reading blobs and trees with their ids checked, and managing key
//! files. Writing goes through a [`session::Session`], which publishes packs,
//! then the index that names them; snapshots are saved last. This layer knows
//! nothing of the command line or of PostgreSQL.

pub mod lock;
pub mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{BlobLocation, Catalog};
use crate::error::{Error, Kind, Result};
use crate::format::config::Config;
use crate::format::index::Index;
use crate::format::keyfile::KeyFile;
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::format::{BlobType, layout};
use crate::id::Id;
use crate::seal::{Compression, KdfParams, MasterKey};
use crate::store::Store;

/// Argon2id cost of new password keys.
#[derive(Debug, Clone, Copy)]
pub struct KdfCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfCost {
    fn default() -> Self {
        KdfCost {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfCost {
    fn params(&self) -> KdfParams {
        KdfParams::new(self.memory_kib, self.iterations, self.parallelism)
    }
}

/// One key file as listed by `walden key list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: Id,
    pub created: String,
    pub host: String,
    pub user: String,
    pub current: bool,
}

pub struct Repo {
    store: Store,
    key: MasterKey,
    key_id: Id,
    config: Config,
    catalog: Catalog,
}

/// The host name, recorded in snapshots, keys and locks.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The user name, recorded in snapshots and keys.
pub fn user_name() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid{}", unsafe { libc::geteuid() }))
}

impl Repo {
    /// Creates a new repository at `store`, refusing if one is there already.
    pub async fn init(
        store: Store,
        password: &[u8],
        cost: KdfCost,
        cache_root: &Path,
    ) -> Result<Repo> {
        if store.size(layout::CONFIG).await?.is_some()
            || !store.list(layout::KEYS).await?.is_empty()
        {
            return Err(Error::conflict(format!(
                "{}: a repository already exists here; init refuses to overwrite it",
                store.location()
            )));
        }
        let key = MasterKey::generate();
        let config = Config::generate();
        let key_id = Id::random();
        let kf = KeyFile::wrap(
            &key_id,
            &key,
            password,
            cost.params(),
            &host_name(),
            &user_name(),
        )?;
        // The key first, then the config: a config without a key could never
        // be opened, while a lone key file is harmless and is refused by a
        // second init just the same.
        store.put(&layout::key(&key_id), kf.encode()).await?;
        let sealed = key.seal(
            crate::seal::Kind::Config,
            b"",
            &config.encode(),
            Compression::None,
        );
        store.put(layout::CONFIG, sealed).await?;
        let catalog = Catalog::open(&catalog_path(cache_root, &config.id))?;
        catalog.clear()?;
        Ok(Repo {
            store,
            key,
            key_id,
            config,
            catalog,
        })
    }

    /// Opens an existing repository with a password and brings the local
    /// catalog up to date with it.
    pub async fn open(store: Store, password: &[u8], cache_root: &Path) -> Result<Repo> {
        let repo = Self::open_uncached(store, password, Some(cache_root)).await?;
        repo.sync_catalog().await?;
        Ok(repo)
    }

    /// Opens the repository without bringing the catalog up to date: for a
    /// caller that syncs it under its lock anyway (`wal::push`), so the hot
    /// path pays for one round of listings, not two.
    pub async fn open_unsynced(store: Store, password: &[u8], cache_root: &Path) -> Result<Repo> {
        Self::open_uncached(store, password, Some(cache_root)).await
    }

    async fn open_uncached(
        store: Store,
        password: &[u8],
        cache_root: Option<&Path>,
    ) -> Result<Repo> {
        let sealed_config = match store.get(layout::CONFIG).await {
            Ok(c) => c,
            Err(e) if e.kind() == Kind::NotFound => {
                return Err(Error::not_found(format!(
                    "{}: no repository here (no config object); run `walden init` first",
                    store.location()
                )));
            }
            Err(e) => return Err(e),
        };
        let keys = store.list(layout::KEYS).await?;
        let mut files = Vec::new();
        for k in &keys {
            let Some(id) = layout::id_of(&k.name) else {
                continue;
            };
            match KeyFile::decode(&store.get(&k.name).await?) {
                Ok(kf) => files.push((id, kf)),
                Err(e) => tracing::warn!("skipping unreadable key file {}: {e}", k.name),
            }
        }
        // Cheapest derivation first: a wrong guess at a cheap key costs
        // milliseconds, while trying an expensive key first would make the
        // cheap key meant for archive_command pay for both.
        files.sort_by_key(|(id, kf)| (kf.kdf.memory_kib as u64 * kf.kdf.iterations as u64, id.0));
        let mut opened = None;
        for (id, kf) in &files {
            match kf.unwrap(id, password) {
                Ok(m) => {
                    opened = Some((*id, m));
                    break;
                }
                Err(e) if e.kind() == Kind::WrongPassword => continue,
                Err(e) => {
                    // Another key file may still open the repository.
                    tracing::warn!("skipping key file {id}: {e}");
                    continue;
                }
            }
        }
        let Some((key_id, key)) = opened else {
            if keys.is_empty() {
                return Err(Error::corrupt(format!(
                    "{}: the repository has no key files",
                    store.location()
                )));
            }
            return Err(Error::new(
                Kind::WrongPassword,
                format!(
                    "wrong password: none of the {} key(s) of {} opens with it",
                    keys.len(),
                    store.location()
                ),
            ));
        };
        let config_bytes = key
            .open(crate::seal::Kind::Config, b"", &sealed_config)
            .map_err(|e| e.context("repository config"))?;
        let config = Config::decode(&config_bytes)?;
        let catalog = match cache_root {
            Some(root) => Catalog::open(&catalog_path(root, &config.id))?,
            None => Catalog::in_memory()?,
        };
        Ok(Repo {
            store,
            key,
            key_id,
            config,
            catalog,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn key(&self) -> &MasterKey {
        &self.key
    }
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }
    pub fn id(&self) -> Id {
        self.config.id
    }

    pub fn compression(&self) -> Compression {
        if self.config.zstd_level == 0 {
            Compression::None
        } else {
            Compression::Zstd(self.config.zstd_level)
        }
    }

    /// Loads index files and snapshots the catalog has not seen. When an index
    /// the catalog knows is gone from the repository (a prune rewrote it),
    /// the catalog is rebuilt from scratch.
    pub async fn sync_catalog(&self) -> Result<()> {
        let listed: Vec<Id> = self
            .store
            .list(layout::INDEX)
            .await?
            .iter()
            .filter_map(|l| layout::id_of(&l.name))
            .collect();
        let known: std::collections::HashSet<Id> =
            self.catalog.known_indexes()?.into_iter().collect();
        let listed_set: std::collections::HashSet<Id> = listed.iter().copied().collect();
        if known.iter().any(|k| !listed_set.contains(k)) {
            tracing::info!("an index file the catalog knows is gone; rebuilding the catalog");
            self.catalog.clear()?;
            return Box::pin(self.sync_catalog()).await;
        }
        let new: Vec<Id> = listed.into_iter().filter(|i| !known.contains(i)).collect();
        self.load_indexes(&new).await?;
        self.sync_snapshots().await
    }

    /// Drops the catalog's content and reloads it from the repository.
    pub async fn rebuild_catalog(&self) -> Result<()> {
        self.catalog.clear()?;
        self.sync_catalog().await
    }

    async fn load_indexes(&self, ids: &[Id]) -> Result<()> {
        use futures_util::StreamExt;
        let mut s = futures_util::stream::iter(ids.iter().map(|id| async move {
            let idx = self.read_index(id).await?;
            Ok::<_, Error>((*id, idx))
        }))
        .buffer_unordered(8);
        while let Some(r) = s.next().await {
            let (id, idx) = r?;
            self.catalog.add_index(&id, &idx)?;
        }
        Ok(())
    }

    /// Reads and opens one index file.
    pub async fn read_index(&self, id: &Id) -> Result<Index> {
        let name = layout::index(id);
        let sealed = self.store.get(&name).await?;
        let plain = self
            .key
            .open(crate::seal::Kind::Index, &id.0, &sealed)
            .map_err(|e| e.context(format!("index file {name}")))?;
        Index::decode(&plain).map_err(|e| e.context(format!("index file {name}")))
    }

    async fn sync_snapshots(&self) -> Result<()> {
        let listed: Vec<Id> = self
            .store
            .list(layout::SNAPSHOTS)
            .await?
            .iter()
            .filter_map(|l| layout::id_of(&l.name))
            .collect();
        let cached: std::collections::HashSet<Id> = self
            .catalog
            .snapshots()?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let listed_set: std::collections::HashSet<Id> = listed.iter().copied().collect();
        for gone in cached.iter().filter(|c| !listed_set.contains(c)) {
            self.catalog.remove_snapshot(gone)?;
        }
        for id in listed.iter().filter(|l| !cached.contains(l)) {
            let snap = self.read_snapshot(id).await?;
            self.catalog.add_snapshot(id, &snap.time, &snap.encode())?;
        }
        Ok(())
    }

    pub async fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let name = layout::snapshot(id);
        let sealed = self.store.get(&name).await?;
        let plain = self
            .key
            .open(crate::seal::Kind::Snapshot, &id.0, &sealed)
            .map_err(|e| e.context(format!("snapshot {name}")))?;
        Snapshot::decode(&plain).map_err(|e| e.context(format!("snapshot {name}")))
    }

    /// Every snapshot, oldest first, from the catalog.
    pub fn snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.catalog
            .snapshots()?
            .into_iter()
            .map(|c| Ok((c.id, Snapshot::decode(&c.json)?)))
            .collect()
    }

    /// Resolves `latest`, a full id or a unique prefix of one.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        let all = self.snapshots()?;
        if spec == "latest" {
            return all
                .into_iter()
                .max_by(|a, b| a.1.time.cmp(&b.1.time))
                .ok_or_else(|| Error::not_found("the repository has no snapshots"));
        }
        let matches: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(spec))
            .collect();
        match matches.len() {
            0 => Err(Error::not_found(format!(
                "no snapshot {spec:?} in the repository"
            ))),
            1 => Ok(matches.into_iter().next().expect("one")),
            n => Err(Error::invalid(format!(
                "snapshot prefix {spec:?} matches {n} snapshots"
            ))),
        }
    }

    /// Writes a snapshot file; call only once its index files are stored.
    pub async fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let id = Id::random();
        let plain = snap.encode();
        let sealed = self.key.seal(
            crate::seal::Kind::Snapshot,
            &id.0,
            &plain,
            Compression::Zstd(3),
        );
        self.store.put(&layout::snapshot(&id), sealed).await?;
        self.catalog.add_snapshot(&id, &snap.time, &plain)?;
        Ok(id)
    }

    /// Writes an index file and records it in the catalog.
    pub async fn save_index(&self, index: &Index) -> Result<Id> {
        let id = Id::random();
        let sealed = self.key.seal(
            crate::seal::Kind::Index,
            &id.0,
            &index.encode(),
            Compression::Zstd(3),
        );
        self.store.put(&layout::index(&id), sealed).await?;
        self.catalog.add_index(&id, index)?;
        Ok(id)
    }

    pub fn locate(&self, id: &Id) -> Result<BlobLocation> {
        self.catalog.lookup(id)?.ok_or_else(|| {
            Error::not_found(format!("blob {id} is not in any index of the repository"))
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

    // ---- keys ----

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for k in self.store.list(layout::KEYS).await? {
            let Some(id) = layout::id_of(&k.name) else {
                continue;
            };
            let kf = match KeyFile::decode(&self.store.get(&k.name).await?) {
                Ok(kf) => kf,
                Err(e) => {
                    tracing::warn!("unreadable key file {}: {e}", k.name);
                    continue;
                }
            };
            out.push(KeyInfo {
                id,
                created: kf.created,
                host: kf.host,
                user: kf.user,
                current: id == self.key_id,
            });
        }
        Ok(out)
    }

    /// Adds a key file that opens the repository with `password`.
    pub async fn add_key(&self, password: &[u8], cost: KdfCost) -> Result<Id> {
        let id = Id::random();
        let kf = KeyFile::wrap(
            &id,
            &self.key,
            password,
            cost.params(),
            &host_name(),
            &user_name(),
        )?;
        self.store.put(&layout::key(&id), kf.encode()).await?;
        // Read it back: a key that cannot be opened must not be reported added.
        let back = KeyFile::decode(&self.store.get(&layout::key(&id)).await?)?;
        back.unwrap(&id, password)?;
        Ok(id)
    }

    /// Removes a key file by id or unique prefix; the last key is refused.
    pub async fn remove_key(&self, spec: &str) -> Result<Id> {
        let keys = self.list_keys().await?;
        let matches: Vec<_> = keys
            .iter()
            .filter(|k| k.id.to_hex().starts_with(spec))
            .collect();
        let k = match matches.as_slice() {
            [] => return Err(Error::not_found(format!("no key {spec:?}"))),
            [k] => *k,
            _ => return Err(Error::invalid(format!("key prefix {spec:?} is ambiguous"))),
        };
        if keys.len() == 1 {
            return Err(Error::conflict(
                "refusing to remove the last key: the repository could never be opened again",
            ));
        }
        self.store.delete(&layout::key(&k.id)).await?;
        Ok(k.id)
    }

    /// Replaces the key file this repository was opened with by one for a
    /// new password. The new key is stored and checked before the old one
    /// is removed.
    pub async fn change_password(&mut self, new_password: &[u8], cost: KdfCost) -> Result<Id> {
        let old = self.key_id;
        let new = self.add_key(new_password, cost).await?;
        self.store.delete(&layout::key(&old)).await?;
        self.key_id = new;
        Ok(new)
    }

    pub fn key_id(&self) -> Id {
        self.key_id
    }
}

/// Where a repository's catalog lives under the cache root.
pub fn catalog_path(cache_root: &Path, repo_id: &Id) -> PathBuf {
    cache_root.join(repo_id.to_hex()).join("catalog.sqlite")
}

/// Where `wal-fetch` keeps WAL segments fetched ahead of PostgreSQL's asks.
pub fn spool_path(cache_root: &Path, repo_id: &Id) -> PathBuf {
    cache_root.join(repo_id.to_hex()).join("wal-spool")
}

/// Shared ownership for the pipeline's threads.
pub type SharedRepo = Arc<Repo>;
