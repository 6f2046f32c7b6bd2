//! Tree blobs (`repo-format/tree.md`): one per directory, listing its entries
//! sorted by name bytes, each with metadata and either the ids of its content
//! chunks (files), the id of its own tree (directories) or a target
//! (symlinks). A snapshot is a tree of trees, so no single object grows with
//! the whole file count and unchanged directories are shared between
//! snapshots. JSON, stored as a tree blob (sealed kind `T`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::id::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    #[serde(with = "os_bytes")]
    pub name: Vec<u8>,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
    pub inode: u64,
    pub dev: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    /// The file's blob ids, when there are at most
    /// [`super::list::INLINE_MAX`] of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<Id>,
    /// The root of the file's content list, when it has more blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<Id>,
    /// The file is stored by pages: `content` or `list` names the pieces of
    /// its page map ([`super::pagemap`]), not its data blobs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<Id>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_os_bytes"
    )]
    pub target: Option<Vec<u8>>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The metadata a node records about a file, directory or symlink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stat {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub ctime: i64,
    pub ctime_nsec: u32,
    pub inode: u64,
    pub dev: u64,
    pub size: u64,
}

impl Node {
    /// A node with no content yet; directories and symlinks have size 0.
    pub fn new(name: Vec<u8>, kind: NodeKind, st: Stat) -> Node {
        Node {
            name,
            kind,
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            mtime: st.mtime,
            mtime_nsec: st.mtime_nsec,
            ctime: st.ctime,
            ctime_nsec: st.ctime_nsec,
            inode: st.inode,
            dev: st.dev,
            size: if kind == NodeKind::File { st.size } else { 0 },
            content: vec![],
            list: None,
            paged: false,
            subtree: None,
            target: None,
        }
    }

    /// Whether the node names any content (inline ids or a list).
    pub fn has_content(&self) -> bool {
        !self.content.is_empty() || self.list.is_some()
    }

    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        super::to_json(self)
    }
    pub fn decode(bytes: &[u8]) -> Result<Tree> {
        super::from_json("tree", bytes)
    }
}

/// File names and link targets are bytes on Unix. They are stored as a JSON
/// string when they are UTF-8 and as `{"hex": "…"}` otherwise, so no name is
/// ever lost or altered.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BytesRepr {
    Text(String),
    Raw { hex: String },
}

mod os_bytes {
    use super::*;
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
        match std::str::from_utf8(b) {
            Ok(t) => BytesRepr::Text(t.to_string()),
            Err(_) => BytesRepr::Raw {
                hex: hex::encode(b),
            },
        }
        .serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
        match BytesRepr::deserialize(d)? {
            BytesRepr::Text(t) => Ok(t.into_bytes()),
            BytesRepr::Raw { hex } => hex::decode(hex).map_err(serde::de::Error::custom),
        }
    }
}

mod opt_os_bytes {
    use super::*;
    pub fn serialize<S: Serializer>(
        b: &Option<Vec<u8>>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match b {
            Some(b) => super::os_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Vec<u8>>, D::Error> {
        super::os_bytes::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_names_survive() {
        let mut n = Node::new(
            vec![0x66, 0xff, 0x6f],
            NodeKind::Symlink,
            Stat {
                mode: 0o777,
                uid: 1,
                gid: 2,
                mtime: 3,
                mtime_nsec: 4,
                ctime: 5,
                ctime_nsec: 6,
                inode: 7,
                dev: 8,
                size: 0,
            },
        );
        n.target = Some(b"t\xfe".to_vec());
        let t = Tree { nodes: vec![n] };
        assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
    }
}
