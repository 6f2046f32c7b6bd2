//! The storage adapter: an OpenDAL operator chosen by URL — a plain path (the
//! local default), `s3://bucket/prefix` or `gs://bucket/prefix` — used only
//! through put, get, ranged get, list and delete, so every backend behaves
//! alike. Whole-object puts only: the GCS emulator lacks multipart uploads and
//! create-if-absent, and walden's objects are content-addressed or randomly
//! named, so neither is needed. This file knows nothing of what objects mean.
//!
//! Cloud settings come from the URL's query (`?endpoint=…&region=…`) or the
//! usual environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! `STORAGE_EMULATOR_HOST`, `GOOGLE_APPLICATION_CREDENTIALS`). Instance
//! metadata services are never queried: credentials must be given.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind as OdKind, Operator};

use crate::error::{Error, Kind, Result};

/// A repository's object store.
#[derive(Clone, Debug)]
pub struct Store {
    op: Operator,
    location: String,
    /// The root directory when the store is the local filesystem.
    local_root: Option<std::path::PathBuf>,
}

/// One listed object: its name relative to the repository root, and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub size: u64,
}

/// Reads one setting from the process environment; empty means unset.
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn split_url(rest: &str) -> (String, String, HashMap<String, String>) {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    let q = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (
        bucket.to_string(),
        format!("/{}", prefix.trim_matches('/')),
        q,
    )
}

fn odal(location: &str, e: opendal::Error) -> Error {
    Error::new(Kind::Unavailable, format!("storage {location}: {e}"))
}

impl Store {
    /// Opens the store a repository URL names, with cloud settings from the
    /// process environment. Does not touch the network.
    pub fn open(url: &str) -> Result<Store> {
        Self::open_with(url, &process_env)
    }

    /// Like [`Store::open`], reading cloud settings through `env` instead of
    /// the process environment.
    pub fn open_with(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Store> {
        let mut local_root = None;
        let op = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, root, q) = split_url(rest);
            if bucket.is_empty() {
                return Err(Error::invalid(format!("{url}: no bucket in the S3 URL")));
            }
            let mut b = opendal::services::S3::default()
                .bucket(&bucket)
                .root(&root)
                .disable_config_load()
                .disable_ec2_metadata();
            let region = q
                .get("region")
                .cloned()
                .or_else(|| env("AWS_REGION"))
                .or_else(|| env("AWS_DEFAULT_REGION"));
            b = b.region(region.as_deref().unwrap_or("us-east-1"));
            if let Some(ep) = q
                .get("endpoint")
                .cloned()
                .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                .or_else(|| env("AWS_ENDPOINT_URL"))
            {
                b = b.endpoint(&ep);
            }
            match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(k), Some(s)) => {
                    b = b.access_key_id(&k).secret_access_key(&s);
                    if let Some(t) = env("AWS_SESSION_TOKEN") {
                        b = b.session_token(&t);
                    }
                }
                _ => b = b.skip_signature(),
            }
            Operator::new(b).map_err(|e| Error::invalid(format!("{url}: {e}")))?
        } else if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, root, q) = split_url(rest);
            if bucket.is_empty() {
                return Err(Error::invalid(format!("{url}: no bucket in the GCS URL")));
            }
            let mut b = opendal::services::Gcs::default()
                .bucket(&bucket)
                .root(&root)
                .disable_config_load()
                .disable_vm_metadata();
            let endpoint = q.get("endpoint").cloned().or_else(|| {
                env("STORAGE_EMULATOR_HOST").map(|h| {
                    if h.contains("://") {
                        h
                    } else {
                        format!("http://{h}")
                    }
                })
            });
            if let Some(ep) = &endpoint {
                b = b.endpoint(ep);
            }
            if let Some(path) = q
                .get("credential_path")
                .cloned()
                .or_else(|| env("GOOGLE_APPLICATION_CREDENTIALS"))
            {
                b = b.credential_path(&path);
            } else if endpoint.is_some() {
                // An emulator takes unsigned requests.
                b = b.skip_signature();
            } else {
                return Err(Error::invalid(format!(
                    "{url}: no GCS credentials: set GOOGLE_APPLICATION_CREDENTIALS"
                )));
            }
            Operator::new(b).map_err(|e| Error::invalid(format!("{url}: {e}")))?
        } else if url.starts_with("memory://") {
            Operator::new(opendal::services::Memory::default())
                .map_err(|e| Error::internal(e.to_string()))?
        } else if url.contains("://") {
            return Err(Error::invalid(format!(
                "{url}: unknown repository scheme (use a path, s3://bucket/prefix or gs://bucket/prefix)"
            )));
        } else {
            let path = Path::new(url);
            let abs = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| Error::io("current directory", e))?
                    .join(path)
            };
            let root = abs.to_string_lossy().to_string();
            // Writes go to a temporary file that is fsynced and then renamed,
            // so a killed process never leaves a partial object under its name.
            let tmp = abs.join(".tmp");
            local_root = Some(abs.clone());
            let b = opendal::services::Fs::default()
                .root(&root)
                .atomic_write_dir(&tmp.to_string_lossy());
            Operator::new(b).map_err(|e| Error::invalid(format!("{url}: {e}")))?
        };
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(300))
                    .with_io_timeout(Duration::from_secs(60)),
            )
            .layer(RetryLayer::new().with_jitter().with_max_times(5));
        Ok(Store {
            op,
            location: url.to_string(),
            local_root,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Stores `bytes` under `name` in one request. Returns once the backend
    /// has acknowledged the write (fsync and rename on the local filesystem).
    pub async fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.op
            .write(name, bytes)
            .await
            .map_err(|e| odal(&self.location, e).context(format!("writing {name}")))?;
        if let Some(root) = &self.local_root {
            // The file was fsynced before its rename; the rename itself is
            // durable only once its directory is synced too.
            let path = root.join(name);
            let dir = path.parent().unwrap_or(root).to_path_buf();
            tokio::task::spawn_blocking(move || {
                std::fs::File::open(&dir).and_then(|d| d.sync_all())
            })
            .await
            .map_err(|e| Error::internal(format!("directory sync: {e}")))?
            .map_err(|e| Error::io(format!("syncing the directory of {name}"), e))?;
        }
        Ok(())
    }

    pub async fn get(&self, name: &str) -> Result<Vec<u8>> {
        match self.op.read(name).await {
            Ok(b) => Ok(b.to_vec()),
            Err(e) if e.kind() == OdKind::NotFound => Err(Error::not_found(format!(
                "{name} is missing from the repository"
            ))),
            Err(e) => Err(odal(&self.location, e).context(format!("reading {name}"))),
        }
    }

    /// Reads `len` bytes at `offset`; a short object is reported as corrupt.
    pub async fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.op.read_with(name).range(offset..offset + len).await {
            Ok(b) if b.len() as u64 == len => Ok(b.to_vec()),
            Ok(b) => Err(Error::corrupt(format!(
                "{name}: wanted {len} bytes at offset {offset}, got {}",
                b.len()
            ))),
            Err(e) if e.kind() == OdKind::NotFound => Err(Error::not_found(format!(
                "{name} is missing from the repository"
            ))),
            Err(e) if e.kind() == OdKind::RangeNotSatisfied => Err(Error::corrupt(format!(
                "{name} is shorter than expected (range {offset}+{len})"
            ))),
            // S3 and GCS report a body shorter than the range, and GCS its
            // 416, as "unexpected": tell a short object from an outage by size.
            Err(e) => match self.size(name).await {
                Ok(Some(size)) if size < offset + len => Err(Error::corrupt(format!(
                    "{name} is {size} bytes, shorter than expected (range {offset}+{len})"
                ))),
                _ => Err(odal(&self.location, e).context(format!("reading {name}"))),
            },
        }
    }

    /// The size of `name`, or None when it does not exist.
    pub async fn size(&self, name: &str) -> Result<Option<u64>> {
        match self.op.stat(name).await {
            Ok(m) => Ok(Some(m.content_length())),
            Err(e) if e.kind() == OdKind::NotFound => Ok(None),
            Err(e) => Err(odal(&self.location, e).context(format!("checking {name}"))),
        }
    }

    /// Every object under `prefix` (which ends in `/`), recursively.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let entries = match self.op.list_with(prefix).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == OdKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(odal(&self.location, e).context(format!("listing {prefix}"))),
        };
        let mut out = Vec::new();
        for e in entries {
            let name = e.path().trim_start_matches('/').to_string();
            if name.ends_with('/') {
                continue;
            }
            let mut size = e.metadata().content_length();
            if size == 0 {
                // Some backends omit sizes in listings.
                size = self.size(&name).await?.unwrap_or(0);
            }
            out.push(Listed { name, size });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
        match self.op.delete(name).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == OdKind::NotFound => Ok(()),
            Err(e) => Err(odal(&self.location, e).context(format!("deleting {name}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let (b, r, q) = split_url("bkt/some/prefix/?endpoint=http://x:1&region=eu");
        assert_eq!(b, "bkt");
        assert_eq!(r, "/some/prefix");
        assert_eq!(q["endpoint"], "http://x:1");
        assert_eq!(q["region"], "eu");
        assert!(Store::open("ftp://x").is_err());
        assert!(Store::open("s3:///nobucket").is_err());
    }
}
