//! Round trips of every format codec over generated values (proptest):
//! whatever walden encodes, it decodes to the same value; and a truncated
//! binary encoding is refused, never misread.

use proptest::prelude::*;

use walden::format::index::{Index, IndexedPack};
use walden::format::list::List;
use walden::format::lock::Lock;
use walden::format::pack::{PackBuilder, PackEntry};
use walden::format::pagemap::{PageRef, Piece};
use walden::format::point::RestorePoint;
use walden::format::tree::{Node, NodeKind, Stat, Tree};
use walden::format::wal::{WalBlob, WalRecord};
use walden::format::{BlobType, VERSION};
use walden::id::Id;
use walden::seal::{Compression, Kind, MasterKey};

fn id() -> impl Strategy<Value = Id> {
    any::<[u8; 32]>().prop_map(Id)
}

fn blob_type() -> impl Strategy<Value = BlobType> {
    prop_oneof![
        Just(BlobType::Data),
        Just(BlobType::Tree),
        Just(BlobType::List),
        Just(BlobType::Map)
    ]
}

fn entry() -> impl Strategy<Value = PackEntry> {
    (blob_type(), id(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(blob_type, id, offset, length, raw_length)| PackEntry {
            blob_type,
            id,
            offset,
            length,
            raw_length,
        },
    )
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..40)
        .prop_filter("a valid name", |n| !n.contains(&b'/') && !n.contains(&0))
}

fn node() -> impl Strategy<Value = Node> {
    (
        name(),
        prop_oneof![
            Just(NodeKind::File),
            Just(NodeKind::Dir),
            Just(NodeKind::Symlink)
        ],
        any::<(u32, u32, u32, i64, u32, i64, u32, u64, u64)>(),
        any::<u64>(),
        prop::collection::vec(id(), 0..5),
        prop::option::of(id()),
        any::<bool>(),
        prop::option::of(prop::collection::vec(any::<u8>(), 1..30)),
    )
        .prop_map(
            |(
                name,
                kind,
                (mode, uid, gid, mt, mtn, ct, ctn, ino, dev),
                size,
                content,
                sub,
                paged,
                target,
            )| {
                let mut n = Node::new(
                    name,
                    kind,
                    Stat {
                        mode: mode & 0o7777,
                        uid,
                        gid,
                        mtime: mt,
                        mtime_nsec: mtn,
                        ctime: ct,
                        ctime_nsec: ctn,
                        inode: ino,
                        dev,
                        size,
                    },
                );
                match kind {
                    NodeKind::File => {
                        n.content = content;
                        n.paged = paged;
                    }
                    NodeKind::Dir => n.subtree = sub.or(Some(Id([1; 32]))),
                    NodeKind::Symlink => n.target = target.or(Some(b"t".to_vec())),
                }
                n
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn index_round_trips(packs in prop::collection::vec(
        (id(), any::<u64>(), prop::collection::vec(entry(), 0..6)), 0..5)) {
        let idx = Index {
            packs: packs.into_iter().map(|(id, size, blobs)| IndexedPack { id, size, blobs }).collect(),
        };
        let b = idx.encode();
        prop_assert_eq!(Index::decode(&b).unwrap(), idx);
        prop_assert!(Index::decode(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn pack_header_round_trips(blobs in prop::collection::vec(
        (blob_type(), prop::collection::vec(any::<u8>(), 0..300)), 1..8)) {
        let key = MasterKey::generate();
        let mut pb = PackBuilder::new();
        for (t, data) in &blobs {
            let id = key.blob_id(t.seal_kind(), data);
            let env = key.seal(t.seal_kind(), &id.0, data, Compression::Zstd(1));
            pb.add(*t, id, data.len() as u32, &env);
        }
        let (pid, bytes, entries) = pb.finish(&key);
        prop_assert_eq!(walden::format::pack::decode(&key, &pid, &bytes).unwrap(), entries);
    }

    #[test]
    fn content_lists_round_trip(level in 0u8..=5, ids in prop::collection::vec(id(), 1..300)) {
        let l = List { level, ids };
        let b = l.encode();
        prop_assert_eq!(List::decode(&b).unwrap(), l);
        prop_assert!(List::decode(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn page_map_pieces_round_trip(
        blobs in prop::collection::vec(id(), 1..4),
        pages in prop::collection::vec((0usize..4, 0u16..200, any::<[u8; 8]>()), 1..200),
    ) {
        let piece = Piece {
            page_size: 8192,
            pages: pages
                .into_iter()
                .map(|(b, index, hash)| PageRef { hash, blob: blobs[b % blobs.len()], index })
                .collect(),
        };
        let b = piece.encode();
        prop_assert_eq!(Piece::decode(&b).unwrap(), piece);
        prop_assert!(Piece::decode(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn trees_round_trip(mut nodes in prop::collection::vec(node(), 0..8)) {
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|a, b| a.name == b.name);
        let t = Tree { nodes };
        prop_assert_eq!(Tree::decode(&t.encode()).unwrap(), t);
    }

    #[test]
    fn wal_records_round_trip(
        sysid in any::<u64>(),
        seg in any::<u32>(),
        content in prop::collection::vec((id(), id(), any::<u32>(), any::<u32>(), any::<u32>()), 0..40),
        size in any::<u64>(),
    ) {
        let r = WalRecord {
            version: VERSION,
            system_identifier: sysid.to_string(),
            name: format!("00000001{:016X}", seg),
            size,
            content: content
                .into_iter()
                .map(|(id, pack, offset, length, raw_length)| WalBlob { id, pack, offset, length, raw_length })
                .collect(),
            time: "2026-12-01T00:00:00.000000000Z".into(),
            host: "h".into(),
        };
        prop_assert_eq!(WalRecord::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn restore_points_and_locks_round_trip(
        name in "[a-z ]{1,63}", lsn in any::<u64>(), tli in 1u32.., pid in any::<u32>(), ex in any::<bool>(),
    ) {
        let p = RestorePoint {
            version: VERSION,
            name,
            lsn: format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff),
            timeline: tli,
            time: "2026-12-01T00:00:00.000000000Z".into(),
            system_identifier: "7".into(),
            host: "h".into(),
        };
        prop_assert_eq!(RestorePoint::decode(&p.encode()).unwrap(), p);
        let l = Lock { time: "t".into(), host: "h".into(), pid, exclusive: ex };
        let back = Lock::decode(&l.encode()).unwrap();
        prop_assert_eq!((back.pid, back.exclusive), (pid, ex));
    }

    #[test]
    fn envelopes_open_only_as_sealed(data in prop::collection::vec(any::<u8>(), 0..2000), flip in any::<usize>()) {
        let key = MasterKey::generate();
        let env = key.seal(Kind::DataBlob, b"name", &data, Compression::Zstd(3));
        prop_assert_eq!(key.open(Kind::DataBlob, b"name", &env).unwrap(), data);
        let mut bad = env.clone();
        let at = flip % bad.len();
        bad[at] ^= 1;
        prop_assert!(key.open(Kind::DataBlob, b"name", &bad).is_err());
    }
}
