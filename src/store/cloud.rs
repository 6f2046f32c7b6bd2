//! The object-store backends, through OpenDAL: S3 (and S3-compatible
//! servers), GCS, and an in-memory store for tests. Whole-object puts only:
//! the GCS emulator lacks multipart uploads, and walden keeps objects to tens
//! of MiB so one request suffices. A create-only put asks the store to refuse
//! an existing name (S3 `If-None-Match: *`, GCS `ifGenerationMatch=0`); where
//! a store cannot, the name is checked first, which narrows the race to the
//! time of one request.
//!
//! Settings come from the URL's query (`?endpoint=…&region=…`) or the usual
//! environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! `STORAGE_EMULATOR_HOST`, `GOOGLE_APPLICATION_CREDENTIALS`). Instance
//! metadata services are never queried: credentials must be given.
//!
//! Transient failures (network errors, 5xx, throttling) are retried with
//! jittered exponential backoff, at most five times; each retry is logged
//! as one line at `debug` level.

use std::time::Duration;

use opendal::layers::{RetryEvent, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind as OdKind, Operator};

use super::url::Location;
use super::{Backend, BoxFuture, Listed, PutMode};
use crate::error::{Error, Kind, Result};

#[derive(Debug)]
pub struct Cloud {
    op: Operator,
    location: String,
    /// Whether the service refuses a create-only put of an existing name by
    /// itself.
    create_only: bool,
}

fn odal(location: &str, e: opendal::Error) -> Error {
    let kind = match e.kind() {
        OdKind::NotFound => Kind::NotFound,
        OdKind::ConditionNotMatch | OdKind::AlreadyExists => Kind::Conflict,
        _ => Kind::Unavailable,
    };
    // `Display` is one line; `Debug` would add a backtrace.
    Error::new(kind, format!("storage {location}: {e}"))
}

fn retry_notice(ev: RetryEvent<'_>) {
    tracing::debug!(
        "storage: retrying {:?} (attempt {}) in {:.1}s after: {}",
        ev.op,
        ev.attempt,
        ev.retry_after.as_secs_f64(),
        ev.err
    );
}

impl Cloud {
    pub fn open(
        location: &Location,
        url: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Cloud> {
        let op = match location {
            Location::S3 {
                bucket,
                root,
                query,
            } => {
                let mut b = opendal::services::S3::default()
                    .bucket(bucket)
                    .root(root)
                    .disable_config_load()
                    .disable_ec2_metadata();
                let region = query
                    .get("region")
                    .cloned()
                    .or_else(|| env("AWS_REGION"))
                    .or_else(|| env("AWS_DEFAULT_REGION"));
                b = b.region(region.as_deref().unwrap_or("us-east-1"));
                if let Some(ep) = query
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
            }
            Location::Gcs {
                bucket,
                root,
                query,
            } => {
                let mut b = opendal::services::Gcs::default()
                    .bucket(bucket)
                    .root(root)
                    .disable_config_load()
                    .disable_vm_metadata();
                let endpoint = query.get("endpoint").cloned().or_else(|| {
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
                if let Some(path) = query
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
            }
            Location::Memory => Operator::new(opendal::services::Memory::default())
                .map_err(|e| Error::internal(e.to_string()))?,
            Location::Local(_) => {
                return Err(Error::internal(
                    "a local path is served by the local backend",
                ));
            }
        };
        // The GCS emulator ignores `ifGenerationMatch`; real GCS honours it,
        // but a check before the put costs one request and also covers the
        // emulator and the memory store.
        let create_only = matches!(location, Location::S3 { .. })
            && op.info().capability().write_with_if_not_exists;
        let op = op
            .layer(
                TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(300))
                    .with_io_timeout(Duration::from_secs(60)),
            )
            .layer(
                // As the AWS SDKs do: 100 ms doubling, jittered, capped.
                RetryLayer::new()
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(10))
                    .with_max_times(5)
                    .with_notify(retry_notice),
            );
        Ok(Cloud {
            op,
            location: url.to_string(),
            create_only,
        })
    }
}

impl Backend for Cloud {
    fn put<'a>(
        &'a self,
        name: &'a str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let w = self.op.write_with(name, bytes);
            let r = match mode {
                PutMode::Replace => w.await,
                PutMode::CreateOnly => {
                    if !self.create_only && self.size(name).await?.is_some() {
                        return Err(taken(name));
                    }
                    w.if_not_exists(true).await
                }
            };
            match r {
                Ok(_) => Ok(()),
                Err(e) if matches!(e.kind(), OdKind::ConditionNotMatch | OdKind::AlreadyExists) => {
                    Err(taken(name))
                }
                Err(e) => Err(odal(&self.location, e).context(format!("writing {name}"))),
            }
        })
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            match self.op.read(name).await {
                Ok(b) => Ok(b.to_vec()),
                Err(e) if e.kind() == OdKind::NotFound => Err(missing(name)),
                Err(e) => Err(odal(&self.location, e).context(format!("reading {name}"))),
            }
        })
    }

    fn get_range<'a>(
        &'a self,
        name: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            match self.op.read_with(name).range(offset..offset + len).await {
                Ok(b) if b.len() as u64 == len => Ok(b.to_vec()),
                Ok(b) => Err(Error::corrupt(format!(
                    "{name}: wanted {len} bytes at offset {offset}, got {}",
                    b.len()
                ))),
                Err(e) if e.kind() == OdKind::NotFound => Err(missing(name)),
                Err(e) if e.kind() == OdKind::RangeNotSatisfied => Err(Error::corrupt(format!(
                    "{name} is shorter than expected (range {offset}+{len})"
                ))),
                // S3 and GCS report a body shorter than the range, and GCS
                // its 416, as "unexpected": tell a short object from an
                // outage by its size.
                Err(e) => match self.size(name).await {
                    Ok(Some(size)) if size < offset + len => Err(Error::corrupt(format!(
                        "{name} is {size} bytes, shorter than expected (range {offset}+{len})"
                    ))),
                    _ => Err(odal(&self.location, e).context(format!("reading {name}"))),
                },
            }
        })
    }

    fn size<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            match self.op.stat(name).await {
                Ok(m) => Ok(Some(m.content_length())),
                Err(e) if e.kind() == OdKind::NotFound => Ok(None),
                Err(e) => Err(odal(&self.location, e).context(format!("checking {name}"))),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Listed>>> {
        Box::pin(async move {
            let entries = match self.op.list_with(prefix).recursive(true).await {
                Ok(e) => e,
                Err(e) if e.kind() == OdKind::NotFound => return Ok(vec![]),
                Err(e) => {
                    return Err(odal(&self.location, e).context(format!("listing {prefix}")));
                }
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
                let modified = e
                    .metadata()
                    .last_modified()
                    .map(std::time::SystemTime::from);
                out.push(Listed {
                    name,
                    size,
                    modified,
                });
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.op.delete(name).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == OdKind::NotFound => Ok(()),
                Err(e) => Err(odal(&self.location, e).context(format!("deleting {name}"))),
            }
        })
    }
}

pub(super) fn missing(name: &str) -> Error {
    Error::not_found(format!("{name} is missing from the repository"))
}

pub(super) fn taken(name: &str) -> Error {
    Error::conflict(format!(
        "{name} already exists in the repository (another writer stored it first)"
    ))
}
