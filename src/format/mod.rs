//! Encoding and decoding of every object walden stores, one file per document
//! in `repo-format/`. Pure: bytes in, values out. Sealing is `seal`'s job and
//! the object names and layout are `layout`'s; nothing here does I/O.

pub mod config;
pub mod index;
pub mod keyfile;
pub mod layout;
pub mod list;
pub mod lock;
pub mod pack;
pub mod pagemap;
pub mod point;
pub mod snapshot;
pub mod tree;
pub mod verified;
pub mod wal;

/// The repository format version this build writes and reads.
pub const VERSION: u32 = 3;

/// Refuses a `version` other than [`VERSION`] in `what` (the config, a key
/// file), saying what to do: an older one was written by an earlier
/// development version (walden is unreleased, so none is read), a newer one
/// needs a newer walden.
pub fn check_version(what: &str, version: u32) -> Result<()> {
    if version < VERSION {
        return Err(Error::unsupported(format!(
            "{what} has format version {version}, written by an earlier development version of walden; \
             this walden reads version {VERSION} only: create a new repository with `walden init`"
        )));
    }
    if version != VERSION {
        return Err(Error::unsupported(format!(
            "{what} has format version {version}, newer than this walden reads ({VERSION}); upgrade walden"
        )));
    }
    Ok(())
}

use crate::error::{Error, Result};

/// Decodes a JSON document, naming it in the error.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::corrupt(format!("{what} does not parse: {e}")))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("walden's own documents always serialize")
}

/// Reads little-endian integers off a byte slice, failing as "corrupt".
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { buf, what }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt(format!("{} is truncated", self.what)));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub fn id(&mut self) -> Result<crate::id::Id> {
        crate::id::Id::from_slice(self.take(32)?)
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn finish(self) -> Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Error::corrupt(format!(
                "{} has {} trailing bytes",
                self.what,
                self.buf.len()
            )))
        }
    }
}

/// The type of a blob inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobType {
    Data,
    Tree,
    /// A content list ([`list`]).
    List,
    /// A piece of a page map ([`pagemap`]).
    Map,
}

impl BlobType {
    pub fn byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
            BlobType::List => 2,
            BlobType::Map => 3,
        }
    }
    pub fn from_byte(b: u8) -> Result<BlobType> {
        match b {
            0 => Ok(BlobType::Data),
            1 => Ok(BlobType::Tree),
            2 => Ok(BlobType::List),
            3 => Ok(BlobType::Map),
            _ => Err(Error::corrupt(format!("unknown blob type {b}"))),
        }
    }
    pub fn seal_kind(self) -> crate::seal::Kind {
        match self {
            BlobType::Data => crate::seal::Kind::DataBlob,
            BlobType::Tree => crate::seal::Kind::TreeBlob,
            BlobType::List => crate::seal::Kind::ListBlob,
            BlobType::Map => crate::seal::Kind::MapBlob,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            BlobType::Data => "data",
            BlobType::Tree => "tree",
            BlobType::List => "list",
            BlobType::Map => "map",
        }
    }
}

/// A time as stored: RFC 3339 in UTC with nanoseconds.
pub fn format_time(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

pub fn parse_time(s: &str) -> Result<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(s).map_err(|e| Error::corrupt(format!("bad time {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_other_than_this_builds_is_refused_saying_what_to_do() {
        assert!(check_version("key file", VERSION).is_ok());
        let older = check_version("key file", VERSION - 1).unwrap_err();
        assert_eq!(older.kind(), crate::error::Kind::Unsupported);
        let m = older.to_string();
        assert!(
            m.contains(&format!("format version {}", VERSION - 1)),
            "{m}"
        );
        assert!(m.contains("walden init"), "{m}");
        let newer = check_version("this repository", VERSION + 1).unwrap_err();
        assert_eq!(newer.kind(), crate::error::Kind::Unsupported);
        let m = newer.to_string();
        assert!(m.starts_with("this repository has format version"), "{m}");
        assert!(m.contains("upgrade walden"), "{m}");
    }
}
