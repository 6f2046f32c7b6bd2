//! The repository: opening it with a password (key files → master key →
//! config) and keeping the local catalog in step with its index files and
//! snapshots. The pieces live beside this file: [`objects`] (the one sealed
//! get/put), [`reader`] (verified blob and tree reads), [`keys`] (key file
//! management), [`session`] (the writer that publishes packs, then the
//! index naming them) and [`lock`]. This layer knows nothing of the command
//! line or of PostgreSQL.
//!
//! One damaged object never stops everything: an index file or snapshot
//! that cannot be read is recorded in the catalog as damaged and left out,
//! with a warning. Writers then treat the blobs it named as unknown and
//! store them again; readers that need them get a clear error; `verify`
//! names it and `repair` rebuilds or forgets it.

pub mod key_cache;
pub mod keys;
pub mod lock;
pub mod objects;
pub mod reader;
pub mod refs;
pub mod session;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::catalog::Catalog;
use crate::error::{Error, Kind, Result};
use crate::format::config::Config;
use crate::format::index::Index;
use crate::format::keyfile::KeyFile;
use crate::format::layout::{self, Object};
use crate::format::snapshot::Snapshot;
use crate::id::Id;
use crate::seal::{Compression, KdfParams, MasterKey};
use crate::store::Store;

pub use keys::KeyInfo;

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

    /// The cost an existing key was made with.
    pub fn of(kdf: &KdfParams) -> KdfCost {
        KdfCost {
            memory_kib: kdf.memory_kib,
            iterations: kdf.iterations,
            parallelism: kdf.parallelism,
        }
    }
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

/// Where a repository's catalog lives under the cache root.
pub fn catalog_path(cache_root: &Path, repo_id: &Id) -> PathBuf {
    cache_root.join(repo_id.to_hex()).join("catalog.sqlite")
}

impl Repo {
    /// Creates a new repository at `store`, refusing if one is there already.
    pub async fn init(
        store: Store,
        password: &[u8],
        cost: KdfCost,
        cache_root: &Path,
    ) -> Result<Repo> {
        Self::init_with(
            store,
            password,
            cost,
            cache_root,
            MasterKey::generate(),
            Config::generate(),
        )
        .await
    }

    /// Creates a repository at `store` that shares `source`'s master key,
    /// chunker parameters, pack size and compression, under its own
    /// password and its own repository id: packs, index files, snapshots,
    /// WAL records and restore points of the source are valid here byte
    /// for byte, so `sync` copies them without opening a blob. Refuses a
    /// location that holds a repository, as `init` does.
    pub async fn init_copy_of(
        store: Store,
        password: &[u8],
        cost: KdfCost,
        cache_root: &Path,
        source: &Repo,
    ) -> Result<Repo> {
        let key = MasterKey::from_bytes(&source.key.to_bytes())?;
        // A new id: the catalog cache and the sync state are named by it,
        // and two repositories with different contents must not share one.
        let config = Config {
            id: Id::random(),
            ..source.config.clone()
        };
        Self::init_with(store, password, cost, cache_root, key, config).await
    }

    /// Whether `other` opens with the same master key and cuts data the
    /// same way, so that its objects are valid here unchanged.
    pub fn shares_keys_with(&self, other: &Repo) -> bool {
        *self.key.to_bytes() == *other.key.to_bytes() && self.config.chunker == other.config.chunker
    }

    async fn init_with(
        store: Store,
        password: &[u8],
        cost: KdfCost,
        cache_root: &Path,
        key: MasterKey,
        config: Config,
    ) -> Result<Repo> {
        if store.size(layout::CONFIG).await?.is_some()
            || !store.list(layout::KEYS).await?.is_empty()
        {
            return Err(Error::conflict(format!(
                "{}: a repository already exists here; init refuses to overwrite it",
                store.location()
            )));
        }
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
        let repo = Repo {
            catalog: Catalog::open(&catalog_path(cache_root, &config.id))?,
            store,
            key,
            key_id,
            config,
        };
        repo.put_object(&Object::Config, &repo.config.encode(), Compression::None)
            .await?;
        repo.catalog.clear()?;
        Ok(repo)
    }

    /// Opens an existing repository with a password and brings the local
    /// catalog up to date with it.
    pub async fn open(store: Store, password: &[u8], cache_root: &Path) -> Result<Repo> {
        let repo = Self::open_unsynced(store, password, cache_root).await?;
        repo.sync_catalog().await?;
        Ok(repo)
    }

    /// Opens the repository without bringing the catalog up to date: for
    /// callers that sync what they need themselves (`wal-push` under its
    /// lock, `wal-fetch` only the index files, `verify` from scratch).
    pub async fn open_unsynced(store: Store, password: &[u8], cache_root: &Path) -> Result<Repo> {
        Self::open_inner(store, password, Some(cache_root)).await
    }

    /// Opens the repository for a command PostgreSQL runs once per WAL
    /// file (`wal-push`, `wal-fetch`): the master key comes from the key
    /// cache when it can (no Argon2id derivation), and the catalog lives in
    /// memory, since WAL records say where their blobs are.
    pub async fn open_for_wal(store: Store, password: &[u8], cache_root: &Path) -> Result<Repo> {
        if let Some(c) = key_cache::load(&store, password, cache_root).await {
            return Ok(Repo {
                store,
                key: c.key,
                key_id: c.key_id,
                config: c.config,
                catalog: Catalog::in_memory()?,
            });
        }
        let repo = Self::open_inner(store, password, None).await?;
        key_cache::save(
            &repo.store,
            password,
            cache_root,
            &repo.key_id,
            &repo.key,
            &repo.config,
        );
        Ok(repo)
    }

    /// A repository over `store` with a catalog in memory only: no cache
    /// directory is touched (tests, one-off reads).
    pub async fn open_in_memory(store: Store, password: &[u8]) -> Result<Repo> {
        let repo = Self::open_inner(store, password, None).await?;
        repo.sync_catalog().await?;
        Ok(repo)
    }

    async fn open_inner(store: Store, password: &[u8], cache_root: Option<&Path>) -> Result<Repo> {
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
        let (key_id, key) = keys::unlock(&store, password).await?;
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

    /// Loads index files and snapshots the catalog has not seen.
    pub async fn sync_catalog(&self) -> Result<()> {
        self.sync_indexes().await?;
        self.sync_snapshots().await
    }

    /// Loads the index files the catalog has not seen. When one the catalog
    /// knows is gone from the repository (a prune rewrote it), the catalog
    /// is rebuilt from scratch.
    pub async fn sync_indexes(&self) -> Result<()> {
        let listed: Vec<Id> = self
            .store
            .list(layout::INDEX)
            .await?
            .iter()
            .filter_map(|l| layout::id_of(&l.name))
            .collect();
        let damaged: HashSet<String> = self
            .catalog
            .damaged()?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let known: HashSet<Id> = self.catalog.known_indexes()?.into_iter().collect();
        let listed_set: HashSet<Id> = listed.iter().copied().collect();
        if known.iter().any(|k| !listed_set.contains(k)) {
            tracing::info!("an index file the catalog knows is gone; rebuilding the catalog");
            self.catalog.clear()?;
            return Box::pin(self.sync_indexes()).await;
        }
        let new: Vec<Id> = listed
            .into_iter()
            .filter(|i| !known.contains(i) && !damaged.contains(&layout::index(i)))
            .collect();
        self.load_indexes(&new).await
    }

    /// Drops the catalog's content and reloads it from the repository.
    pub async fn rebuild_catalog(&self) -> Result<()> {
        self.catalog.clear()?;
        self.sync_catalog().await
    }

    async fn load_indexes(&self, ids: &[Id]) -> Result<()> {
        use futures_util::StreamExt;
        let mut s = futures_util::stream::iter(ids.iter().map(|id| async move {
            let idx = self.read_index(id).await;
            (*id, idx)
        }))
        .buffer_unordered(8);
        while let Some((id, r)) = s.next().await {
            match r {
                Ok(idx) => self.catalog.add_index(&id, &idx)?,
                Err(e) if e.kind() == Kind::Corrupt || e.kind() == Kind::Unsupported => {
                    tracing::warn!(
                        "{e}; the blobs it names are treated as unknown \
                         (run `walden verify`, and `walden repair index` to rebuild it)"
                    );
                    self.catalog
                        .add_damaged(&layout::index(&id), &e.to_string())?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads and opens one index file.
    pub async fn read_index(&self, id: &Id) -> Result<Index> {
        let obj = Object::Index(*id);
        let plain = self.get_object(&obj).await?;
        Index::decode(&plain).map_err(|e| e.context(obj.describe()))
    }

    async fn sync_snapshots(&self) -> Result<()> {
        let listed: Vec<Id> = self
            .store
            .list(layout::SNAPSHOTS)
            .await?
            .iter()
            .filter_map(|l| layout::id_of(&l.name))
            .collect();
        let cached: HashSet<Id> = self
            .catalog
            .snapshots()?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let damaged: HashSet<String> = self
            .catalog
            .damaged()?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let listed_set: HashSet<Id> = listed.iter().copied().collect();
        for gone in cached.iter().filter(|c| !listed_set.contains(c)) {
            self.catalog.remove_snapshot(gone)?;
        }
        for name in damaged.iter().filter(|n| n.starts_with(layout::SNAPSHOTS)) {
            if layout::id_of(name).is_some_and(|id| !listed_set.contains(&id)) {
                self.catalog.remove_damaged(name)?;
            }
        }
        for id in listed
            .iter()
            .filter(|l| !cached.contains(l) && !damaged.contains(&layout::snapshot(l)))
        {
            match self.read_snapshot(id).await {
                Ok(snap) => self.catalog.add_snapshot(id, &snap.time, &snap.encode())?,
                Err(e) if e.kind() == Kind::Corrupt || e.kind() == Kind::Unsupported => {
                    tracing::warn!(
                        "{e}; it is left out (run `walden verify`, and `walden repair snapshots` to forget it)"
                    );
                    self.catalog
                        .add_damaged(&layout::snapshot(id), &e.to_string())?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let obj = Object::Snapshot(*id);
        let plain = self.get_object(&obj).await?;
        Snapshot::decode(&plain).map_err(|e| e.context(obj.describe()))
    }

    /// Every readable snapshot, oldest first, from the catalog.
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
            0 => {
                let damaged = self.catalog.damaged()?.into_iter().find(|(n, _)| {
                    n.strip_prefix(layout::SNAPSHOTS)
                        .is_some_and(|h| h.starts_with(spec))
                });
                match damaged {
                    Some((n, e)) => Err(Error::corrupt(format!(
                        "snapshot {n} is damaged and cannot be restored: {e}"
                    ))),
                    None => Err(Error::not_found(format!(
                        "no snapshot {spec:?} in the repository"
                    ))),
                }
            }
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
        self.put_object(&Object::Snapshot(id), &plain, Compression::Zstd(3))
            .await?;
        self.catalog.add_snapshot(&id, &snap.time, &plain)?;
        Ok(id)
    }

    /// Writes an index file and records it in the catalog.
    pub async fn save_index(&self, index: &Index) -> Result<Id> {
        let id = Id::random();
        self.put_object(&Object::Index(id), &index.encode(), Compression::Zstd(3))
            .await?;
        self.catalog.add_index(&id, index)?;
        Ok(id)
    }
}
