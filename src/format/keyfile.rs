//! Key files (`repo-format/keys.md`): one per password, stored in plaintext
//! JSON at `keys/<id>`. Each holds its own Argon2id parameters and the master
//! key sealed (kind `K`, name = the key file's id) under the key derived from
//! its password. Anyone can read a key file; only the password opens it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind, Result};
use crate::id::Id;
use crate::seal::{Compression, KdfParams, MasterKey};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: String,
    pub host: String,
    pub user: String,
    pub kdf: KdfParams,
    #[serde(with = "crate::seal::hex_bytes")]
    pub master: Vec<u8>,
    /// BLAKE3 of the KDF parameters and the sealed master key, so that a
    /// damaged key file is told apart from a wrong password (both would
    /// fail to authenticate otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

fn check_of(kdf: &KdfParams, master: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(kdf.algorithm.as_bytes());
    for n in [kdf.memory_kib, kdf.iterations, kdf.parallelism] {
        h.update(&n.to_le_bytes());
    }
    h.update(&(kdf.salt.len() as u32).to_le_bytes());
    h.update(&kdf.salt);
    h.update(master);
    h.finalize().to_hex().to_string()
}

impl KeyFile {
    /// Wraps `master` under `password` for the key file that will be named `id`.
    pub fn wrap(
        id: &Id,
        master: &MasterKey,
        password: &[u8],
        kdf: KdfParams,
        host: &str,
        user: &str,
    ) -> Result<KeyFile> {
        let kek = kdf.derive(password)?;
        let master_bytes = master.to_bytes();
        let sealed = kek.seal(
            crate::seal::Kind::MasterKey,
            &id.0,
            &master_bytes,
            Compression::None,
        );
        let check = Some(check_of(&kdf, &sealed));
        Ok(KeyFile {
            version: super::VERSION,
            created: super::format_time(std::time::SystemTime::now()),
            host: host.into(),
            user: user.into(),
            kdf,
            master: sealed,
            check,
        })
    }

    /// Opens the master key; a failure to authenticate is a wrong password.
    pub fn unwrap(&self, id: &Id, password: &[u8]) -> Result<MasterKey> {
        let kek = self.kdf.derive(password)?;
        let bytes = kek
            .open(crate::seal::Kind::MasterKey, &id.0, &self.master)
            .map_err(|_| Error::new(Kind::WrongPassword, "wrong password"))?;
        let bytes = zeroize::Zeroizing::new(bytes);
        MasterKey::from_bytes(&bytes)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile> {
        let k: KeyFile = super::from_json("key file", bytes)?;
        super::check_version("key file", k.version)?;
        if let Some(c) = &k.check
            && *c != check_of(&k.kdf, &k.master)
        {
            return Err(Error::corrupt(
                "key file is damaged: its checksum does not match its content",
            ));
        }
        Ok(k)
    }
}
