//! The unwrapped master key and config, cached in the user's cache
//! directory, so the commands PostgreSQL runs for every WAL file
//! (`wal-push`, `wal-fetch`) pay no Argon2id derivation per call.
//!
//! The cache file is sealed under a key derived by BLAKE3 from the password
//! and the repository's location, and is mode 0600 in a 0700 directory. It
//! protects as much as the password file it sits beside (walden's
//! `archive_command` setup keeps the password in a file on the same disk):
//! whoever can read both learns the password anyway, and whoever can read
//! only the cache learns nothing. A cache is used only while the key file it
//! came from still exists and the repository's config still opens with its
//! key, so `key remove` and a new repository at the same place both end it.
//!
//! Cache file: envelope (kind `K`, name `key cache`) of
//! `key_id[32] || master[64] || config JSON`.

use std::path::{Path, PathBuf};

use crate::atomic_file;
use crate::error::Error;
use crate::format::config::Config;
use crate::format::layout;
use crate::id::Id;
use crate::seal::{Compression, MasterKey, SealKey};
use crate::store::Store;

const CONTEXT: &str = "walden 2026-12-01 key cache";
const AAD: &[u8] = b"key cache";

fn cache_file(cache_root: &Path, location: &str) -> PathBuf {
    let h = blake3::hash(location.as_bytes()).to_hex();
    cache_root.join("keys").join(&h[..32])
}

fn cache_key(password: &[u8], location: &str) -> SealKey {
    let mut m = Vec::with_capacity(password.len() + 1 + location.len());
    m.extend_from_slice(password);
    m.push(0);
    m.extend_from_slice(location.as_bytes());
    let k = SealKey::derive(CONTEXT, &m);
    zeroize::Zeroize::zeroize(&mut m);
    k
}

/// What a cache holds.
pub(super) struct Cached {
    pub key_id: Id,
    pub key: MasterKey,
    pub config: Config,
}

/// The cached key of the repository at `store`, when there is one, it
/// opens with `password`, its key file still exists and the config still
/// opens with it. Anything else is "no cache".
pub(super) async fn load(store: &Store, password: &[u8], cache_root: &Path) -> Option<Cached> {
    let path = cache_file(cache_root, store.location());
    let sealed = std::fs::read(&path).ok()?;
    let plain = zeroize::Zeroizing::new(
        cache_key(password, store.location())
            .open(crate::seal::Kind::MasterKey, AAD, &sealed)
            .ok()?,
    );
    if plain.len() < 96 {
        return None;
    }
    let key_id = Id::from_slice(&plain[..32]).ok()?;
    let key = MasterKey::from_bytes(&plain[32..96]).ok()?;
    let config = Config::decode(&plain[96..]).ok()?;
    // Revoked key, or another repository at this location?
    match store.size(&layout::key(&key_id)).await {
        Ok(Some(_)) => {}
        _ => {
            let _ = std::fs::remove_file(&path);
            return None;
        }
    }
    let sealed_config = store.get(layout::CONFIG).await.ok()?;
    let now = key
        .open(crate::seal::Kind::Config, b"", &sealed_config)
        .ok()?;
    if Config::decode(&now).ok()?.id != config.id {
        let _ = std::fs::remove_file(&path);
        return None;
    }
    Some(Cached {
        key_id,
        key,
        config,
    })
}

/// Caches the key; failing to only costs speed.
pub(super) fn save(
    store: &Store,
    password: &[u8],
    cache_root: &Path,
    key_id: &Id,
    key: &MasterKey,
    config: &Config,
) {
    let path = cache_file(cache_root, store.location());
    let mut plain = zeroize::Zeroizing::new(Vec::with_capacity(96 + 512));
    plain.extend_from_slice(&key_id.0);
    plain.extend_from_slice(&key.to_bytes());
    plain.extend_from_slice(&config.encode());
    let sealed = cache_key(password, store.location()).seal(
        crate::seal::Kind::MasterKey,
        AAD,
        &plain,
        Compression::None,
    );
    let written = path
        .parent()
        .ok_or_else(|| Error::internal("key cache path"))
        .and_then(|dir| {
            crate::catalog::make_private_dir(dir).map_err(|e| Error::io(dir.display(), e))
        })
        .and_then(|_| {
            atomic_file::write(&path, &sealed, 0o600).map_err(|e| Error::io(path.display(), e))
        });
    if let Err(e) = written {
        tracing::debug!("key cache not written: {e}");
    }
}
