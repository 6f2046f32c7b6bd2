//! Key files: finding the one a password opens (cheapest derivation first),
//! and adding, listing, removing and replacing them. A damaged key file is
//! reported as damaged, never taken for a wrong password: key files carry a
//! checksum of their content for that.

use crate::error::{Error, Kind, Result};
use crate::format::keyfile::KeyFile;
use crate::format::layout;
use crate::id::Id;
use crate::seal::MasterKey;
use crate::store::Store;

use super::{KdfCost, Repo, host_name, user_name};

/// One key file as listed by `walden key list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    pub id: Id,
    pub created: String,
    pub host: String,
    pub user: String,
    pub current: bool,
    /// Why the key file cannot be used, when it is damaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

/// Finds the key file `password` opens and returns its id and the master
/// key.
pub(super) async fn unlock(store: &Store, password: &[u8]) -> Result<(Id, MasterKey)> {
    let keys = store.list(layout::KEYS).await?;
    let mut files = Vec::new();
    let mut damaged = Vec::new();
    let mut unsupported = 0;
    for k in &keys {
        let Some(id) = layout::id_of(&k.name) else {
            continue;
        };
        match store.get(&k.name).await.and_then(|b| KeyFile::decode(&b)) {
            Ok(kf) => files.push((id, kf)),
            Err(e) if e.kind() == Kind::Unavailable => return Err(e),
            Err(e) => {
                if e.kind() == Kind::Unsupported {
                    unsupported += 1;
                }
                damaged.push(format!("{}: {e}", k.name));
            }
        }
    }
    // Every key file of another format version: one error says so below,
    // rather than a warning per key file first.
    if files.is_empty() && unsupported > 0 && unsupported == damaged.len() {
        let first = damaged[0].split_once(": ").map_or("", |(_, e)| e);
        let first = first.strip_prefix("key file has ").unwrap_or(first);
        return Err(Error::unsupported(format!(
            "{}: the repository's key files ({unsupported}) have {first}",
            store.location()
        )));
    }
    for d in &damaged {
        tracing::warn!("unusable key file {d}");
    }
    // Cheapest derivation first: a wrong guess at a cheap key costs
    // milliseconds, while trying an expensive key first would make the
    // cheap key meant for archive_command pay for both.
    files.sort_by_key(|(id, kf)| (kf.kdf.memory_kib as u64 * kf.kdf.iterations as u64, id.0));
    let mut tried = 0;
    for (id, kf) in &files {
        match kf.unwrap(id, password) {
            Ok(m) => return Ok((*id, m)),
            Err(e) if e.kind() == Kind::WrongPassword => tried += 1,
            Err(e) => {
                // Another key file may still open the repository.
                tracing::warn!("skipping key file {id}: {e}");
                damaged.push(format!("{}: {e}", layout::key(id)));
            }
        }
    }
    if keys.is_empty() {
        return Err(Error::corrupt(format!(
            "{}: the repository has no key files",
            store.location()
        )));
    }
    if tried == 0 {
        return Err(Error::corrupt(format!(
            "{}: no usable key file: {}",
            store.location(),
            damaged.join("; ")
        )));
    }
    let also = if damaged.is_empty() {
        String::new()
    } else {
        format!(
            " ({} other key file(s) are damaged: {})",
            damaged.len(),
            damaged.join("; ")
        )
    };
    Err(Error::new(
        Kind::WrongPassword,
        format!(
            "wrong password: none of the {tried} key(s) of {} opens with it{also}",
            store.location()
        ),
    ))
}

impl Repo {
    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let mut out = Vec::new();
        for k in self.store.list(layout::KEYS).await? {
            let Some(id) = layout::id_of(&k.name) else {
                continue;
            };
            let info = match self
                .store
                .get(&k.name)
                .await
                .and_then(|b| KeyFile::decode(&b))
            {
                Ok(kf) => KeyInfo {
                    id,
                    created: kf.created,
                    host: kf.host,
                    user: kf.user,
                    current: id == self.key_id,
                    damaged: None,
                },
                Err(e) if e.kind() == Kind::Unavailable => return Err(e),
                Err(e) => KeyInfo {
                    id,
                    created: String::new(),
                    host: String::new(),
                    user: String::new(),
                    current: false,
                    damaged: Some(e.to_string()),
                },
            };
            out.push(info);
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

    /// Removes a key file by id or unique prefix. The last key is refused,
    /// and so is the key this repository was opened with unless `force`:
    /// removing it by mistake locks out whoever uses that password.
    pub async fn remove_key(&self, spec: &str, force: bool) -> Result<Id> {
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
        if keys.iter().filter(|k| k.damaged.is_none()).count() == 1 && k.damaged.is_none() {
            return Err(Error::conflict(
                "refusing to remove the last key: the repository could never be opened again",
            ));
        }
        if k.current && !force {
            return Err(Error::conflict(format!(
                "key {} is the one this password opens; pass --force to remove it anyway",
                k.id.short()
            )));
        }
        self.store.delete(&layout::key(&k.id)).await?;
        Ok(k.id)
    }

    /// Replaces the key file this repository was opened with by one for a
    /// new password, with `cost` or else the old key's own Argon2id cost.
    /// The new key is stored and checked before the old one is removed.
    pub async fn change_password(
        &mut self,
        new_password: &[u8],
        cost: Option<KdfCost>,
    ) -> Result<Id> {
        let old = self.key_id;
        let cost = match cost {
            Some(c) => c,
            None => {
                let kf = KeyFile::decode(&self.store.get(&layout::key(&old)).await?)?;
                KdfCost::of(&kf.kdf)
            }
        };
        let new = self.add_key(new_password, cost).await?;
        self.store.delete(&layout::key(&old)).await?;
        self.key_id = new;
        Ok(new)
    }
}
