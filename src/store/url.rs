//! Repository URLs: a plain path (absolute or relative to the current
//! directory), `s3://bucket/prefix?endpoint=…&region=…`,
//! `gs://bucket/prefix?endpoint=…&credential_path=…`, or `memory://` (tests).
//! Parsing only; building a backend from a location is the backends' job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where a repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3 {
        bucket: String,
        root: String,
        query: HashMap<String, String>,
    },
    Gcs {
        bucket: String,
        root: String,
        query: HashMap<String, String>,
    },
    Memory,
}

fn split(rest: &str) -> (String, String, HashMap<String, String>) {
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

impl Location {
    pub fn parse(url: &str, _env: &dyn Fn(&str) -> Option<String>) -> Result<Location> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, root, query) = split(rest);
            if bucket.is_empty() {
                return Err(Error::invalid(format!("{url}: no bucket in the S3 URL")));
            }
            Ok(Location::S3 {
                bucket,
                root,
                query,
            })
        } else if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, root, query) = split(rest);
            if bucket.is_empty() {
                return Err(Error::invalid(format!("{url}: no bucket in the GCS URL")));
            }
            Ok(Location::Gcs {
                bucket,
                root,
                query,
            })
        } else if url.starts_with("memory://") {
            Ok(Location::Memory)
        } else if url.contains("://") {
            Err(Error::invalid(format!(
                "{url}: unknown repository scheme (use a path, s3://bucket/prefix or gs://bucket/prefix)"
            )))
        } else if url.is_empty() {
            Err(Error::invalid("the repository path is empty"))
        } else {
            let path = Path::new(url);
            let abs = if path.is_absolute() {
                path.to_path_buf()
            } else {
                std::env::current_dir()
                    .map_err(|e| Error::io("current directory", e))?
                    .join(path)
            };
            Ok(Location::Local(abs))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let none = |_: &str| None;
        match Location::parse("s3://bkt/some/prefix/?endpoint=http://x:1&region=eu", &none).unwrap()
        {
            Location::S3 {
                bucket,
                root,
                query,
            } => {
                assert_eq!(bucket, "bkt");
                assert_eq!(root, "/some/prefix");
                assert_eq!(query["endpoint"], "http://x:1");
                assert_eq!(query["region"], "eu");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Location::parse("/srv/repo", &none).unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert!(Location::parse("ftp://x", &none).is_err());
        assert!(Location::parse("gs:///x", &none).is_err());
    }
}
