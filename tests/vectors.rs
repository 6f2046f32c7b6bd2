//! Test vectors of the repository format (`repo-format/vectors/vectors.json`).
//!
//! `check_vectors` checks every vector twice: once through walden's public
//! API, and once through a small independent reading of the specification
//! written here with the primitive crates only (BLAKE3, XChaCha20-Poly1305,
//! zstd, Argon2id, a byte-at-a-time FastCDC). The second reading is what makes
//! the vectors a check of `repo-format/` and not only of the library.
//!
//! `generate_vectors` (ignored) rewrites the file with the library itself:
//! `cargo test --test vectors -- --ignored generate_vectors`. Envelopes use
//! random nonces and key files random salts, so every run writes different
//! bytes for them; the deterministic parts (ids, chunk lengths) stay the same.

use std::path::PathBuf;

use serde_json::{Value, json};

use walden::chunk::ChunkerParams;
use walden::format::BlobType;
use walden::format::config::Config;
use walden::format::index::{Index, IndexedPack};
use walden::format::keyfile::KeyFile;
use walden::format::lock::Lock;
use walden::format::pack::{self, PackBuilder, PackEntry};
use walden::format::snapshot::{PgBackup, Snapshot, Summary};
use walden::format::tree::{Node, NodeKind, Tree};
use walden::id::Id;
use walden::seal::{Compression, KdfParams, Kind, MasterKey};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("repo-format/vectors/vectors.json")
}

// ---------------------------------------------------------------------------
// Helpers shared by the generator and the checker
// ---------------------------------------------------------------------------

const ALL_KINDS: [Kind; 13] = [
    Kind::DataBlob,
    Kind::TreeBlob,
    Kind::ListBlob,
    Kind::MapBlob,
    Kind::PackHeader,
    Kind::Index,
    Kind::Snapshot,
    Kind::Config,
    Kind::Lock,
    Kind::MasterKey,
    Kind::WalRecord,
    Kind::RestorePoint,
    Kind::Verified,
];

fn kind_from_letter(s: &str) -> Kind {
    *ALL_KINDS
        .iter()
        .find(|k| (k.byte() as char).to_string() == s)
        .unwrap_or_else(|| panic!("unknown kind letter {s:?}"))
}

fn letter(k: Kind) -> String {
    (k.byte() as char).to_string()
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("valid hex")
}

fn id_of(v: &Value) -> Id {
    Id::from_hex(v.as_str().expect("an id string")).expect("a 64-digit id")
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().expect("an unsigned integer")
}

fn blob_type_name(t: BlobType) -> &'static str {
    t.as_str()
}

fn blob_type_of(v: &Value) -> BlobType {
    match v.as_str().expect("a blob type") {
        "data" => BlobType::Data,
        "tree" => BlobType::Tree,
        "list" => BlobType::List,
        "map" => BlobType::Map,
        other => panic!("unknown blob type {other}"),
    }
}

/// The vector master key: bytes 0x00, 0x01, …, 0x3f.
fn vector_master_bytes() -> Vec<u8> {
    (0u8..64).collect()
}

/// The data generator of the chunking vectors (`repo-format/chunking.md`):
/// xorshift64 with shifts 13, 7, 17; after each step the low 8 bits of the
/// state are the next byte.
fn xorshift_bytes(start: u64, len: usize) -> Vec<u8> {
    let mut x = start;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn generate_data(g: &Value) -> Vec<u8> {
    let len = u64_of(&g["length"]) as usize;
    match g["kind"].as_str().expect("generator kind") {
        "xorshift64" => {
            let start = u64::from_str_radix(
                g["start"]
                    .as_str()
                    .expect("start as hex")
                    .trim_start_matches("0x"),
                16,
            )
            .expect("hex start");
            xorshift_bytes(start, len)
        }
        "zeros" => vec![0u8; len],
        other => panic!("unknown generator {other}"),
    }
}

fn entry_json(e: &PackEntry) -> Value {
    json!({
        "type": blob_type_name(e.blob_type),
        "id": e.id.to_hex(),
        "offset": e.offset,
        "length": e.length,
        "raw_length": e.raw_length,
    })
}

fn entry_from(v: &Value) -> PackEntry {
    PackEntry {
        blob_type: blob_type_of(&v["type"]),
        id: id_of(&v["id"]),
        offset: u64_of(&v["offset"]) as u32,
        length: u64_of(&v["length"]) as u32,
        raw_length: u64_of(&v["raw_length"]) as u32,
    }
}

fn index_json(idx: &Index) -> Value {
    json!({
        "packs": idx.packs.iter().map(|p| json!({
            "id": p.id.to_hex(),
            "size": p.size,
            "blobs": p.blobs.iter().map(entry_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()
    })
}

fn index_from(v: &Value) -> Index {
    Index {
        packs: v["packs"]
            .as_array()
            .expect("packs")
            .iter()
            .map(|p| IndexedPack {
                id: id_of(&p["id"]),
                size: u64_of(&p["size"]),
                blobs: p["blobs"]
                    .as_array()
                    .expect("blobs")
                    .iter()
                    .map(entry_from)
                    .collect(),
            })
            .collect(),
    }
}

fn chunker_json(p: &ChunkerParams) -> Value {
    json!({
        "algorithm": p.algorithm,
        "min_size": p.min_size,
        "avg_size": p.avg_size,
        "max_size": p.max_size,
        "seed": p.seed,
    })
}

fn chunker_from(v: &Value) -> ChunkerParams {
    ChunkerParams {
        algorithm: v["algorithm"].as_str().expect("algorithm").into(),
        min_size: u64_of(&v["min_size"]) as u32,
        avg_size: u64_of(&v["avg_size"]) as u32,
        max_size: u64_of(&v["max_size"]) as u32,
        seed: u64_of(&v["seed"]),
    }
}

// ---------------------------------------------------------------------------
// An independent reading of the specification
// ---------------------------------------------------------------------------

mod spec {
    use chacha20poly1305::aead::{AeadInOut, KeyInit};
    use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

    /// `envelope.md`: returns (flag, plaintext), or None when authentication fails.
    pub fn open(seal_key: &[u8], kind: u8, name: &[u8], env: &[u8]) -> Option<(u8, Vec<u8>)> {
        if env.len() < 24 + 1 + 16 {
            return None;
        }
        let mut aad = b"walden1".to_vec();
        aad.push(kind);
        aad.extend_from_slice(name);
        let nonce = XNonce::try_from(&env[..24]).ok()?;
        let tag = Tag::try_from(&env[env.len() - 16..]).ok()?;
        let mut body = env[24..env.len() - 16].to_vec();
        let key: [u8; 32] = seal_key.try_into().ok()?;
        XChaCha20Poly1305::new(&Key::from(key))
            .decrypt_inout_detached(&nonce, &aad, body.as_mut_slice().into(), &tag)
            .ok()?;
        let flag = body[0];
        let plain = match flag {
            0 => body[1..].to_vec(),
            1 => zstd::decode_all(&body[1..]).ok()?,
            _ => return None,
        };
        Some((flag, plain))
    }

    /// `keys.md`: the key-encryption key of a key file.
    pub fn derive(
        password: &[u8],
        salt: &[u8],
        memory_kib: u32,
        iterations: u32,
        parallelism: u32,
    ) -> [u8; 32] {
        let params = argon2::Params::new(memory_kib, iterations, parallelism, Some(32)).unwrap();
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        a.hash_password_into(password, salt, &mut out).unwrap();
        out
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// (type byte, id, offset, length, raw_length)
    pub type Entry = (u8, [u8; 32], u32, u32, u32);

    /// `index.md`: (pack id, size, entries) per pack.
    pub fn parse_index(b: &[u8]) -> Vec<([u8; 32], u64, Vec<Entry>)> {
        assert_eq!(&b[..4], b"WIDX");
        assert_eq!(b[4], 1);
        let n = u32_at(b, 5);
        let mut at = 9;
        let mut packs = Vec::new();
        for _ in 0..n {
            let id: [u8; 32] = b[at..at + 32].try_into().unwrap();
            let size = u64::from_le_bytes(b[at + 32..at + 40].try_into().unwrap());
            let m = u32_at(b, at + 40);
            at += 44;
            let mut blobs = Vec::new();
            for _ in 0..m {
                let t = b[at];
                let bid: [u8; 32] = b[at + 1..at + 33].try_into().unwrap();
                blobs.push((
                    t,
                    bid,
                    u32_at(b, at + 33),
                    u32_at(b, at + 37),
                    u32_at(b, at + 41),
                ));
                at += 45;
            }
            packs.push((id, size, blobs));
        }
        assert_eq!(at, b.len(), "no trailing bytes");
        packs
    }

    /// `pack.md`: the entries of a pack, offsets computed from the lengths.
    pub fn parse_pack(seal_key: &[u8], pack: &[u8]) -> Vec<Entry> {
        let n = pack.len();
        let hl = u32_at(pack, n - 4) as usize;
        let start = n - 4 - hl;
        let (flag, header) =
            open(seal_key, b'H', b"", &pack[start..n - 4]).expect("pack header opens");
        assert_eq!(flag, 0, "pack headers are never compressed");
        assert_eq!(header[0], 1, "header version");
        assert_eq!((header.len() - 1) % 41, 0, "whole 41-byte entries");
        let mut off = 0u32;
        let mut out = Vec::new();
        for e in header[1..].chunks(41) {
            let length = u32_at(e, 1);
            out.push((
                e[0],
                e[9..41].try_into().unwrap(),
                off,
                length,
                u32_at(e, 5),
            ));
            off += length;
        }
        assert_eq!(off as usize, start, "the blobs end where the header begins");
        out
    }

    /// `chunking.md`: the mask table, indexed by log2 of a chunk size.
    pub const MASKS: [(usize, u64); 17] = [
        (7, 0x0000_0000_1803_5100),
        (8, 0x0000_0018_0003_5300),
        (9, 0x0000_0190_0035_3000),
        (10, 0x0000_5900_0353_0000),
        (11, 0x0000_d900_0353_0000),
        (12, 0x0000_d901_0353_0000),
        (13, 0x0000_d903_0353_0000),
        (14, 0x0000_d903_1353_0000),
        (15, 0x0000_d90f_0353_0000),
        (16, 0x0000_d903_0353_7000),
        (17, 0x0000_d907_0353_7000),
        (18, 0x0000_d907_0753_7000),
        (19, 0x0000_d917_0753_7000),
        (20, 0x0000_d917_4753_7000),
        (21, 0x0000_d917_6753_7000),
        (22, 0x0000_d937_6753_7000),
        (23, 0x0000_d937_7753_7000),
    ];

    fn mask(bits: usize) -> u64 {
        MASKS
            .iter()
            .find(|(b, _)| *b == bits)
            .expect("mask in range")
            .1
    }

    /// `chunking.md`, byte at a time: the length of the next chunk of `b`,
    /// where `b` holds min(max_size, bytes left) bytes.
    fn cut(gear: &[u64; 256], b: &[u8], min: usize, avg: usize, ms: u64, ml: u64) -> usize {
        let n = b.len();
        if n <= min {
            return n;
        }
        let center = avg.min(n);
        let strict_end = center & !1;
        let end = n & !1;
        let mut h = 0u64;
        for (i, &byte) in b.iter().enumerate().take(end).skip(min) {
            h = (h << 1).wrapping_add(gear[byte as usize]);
            let m = if i < strict_end { ms } else { ml };
            if h & m == 0 {
                return i;
            }
        }
        n
    }

    pub fn chunk_lengths(
        base_gear: &[u64; 256],
        data: &[u8],
        min: usize,
        avg: usize,
        max: usize,
        seed: u64,
    ) -> Vec<usize> {
        let mut gear = *base_gear;
        for g in gear.iter_mut() {
            *g ^= seed;
        }
        let bits = (avg as f64).log2().round() as usize;
        let (ms, ml) = (mask(bits + 1), mask(bits - 1));
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = max.min(data.len() - pos);
            let len = cut(&gear, &data[pos..pos + n], min, avg, ms, ml);
            out.push(len);
            pos += len;
        }
        out
    }
}

/// FastCDC's unseeded gear table as the `fastcdc` crate ships it.
fn base_gear() -> [u64; 256] {
    let (g, _) = fastcdc::v2020::get_gear_with_seed(0);
    g.as_ref().try_into().expect("256 entries")
}

fn gear_checksum(g: &[u64; 256]) -> String {
    let bytes: Vec<u8> = g.iter().flat_map(|v| v.to_le_bytes()).collect();
    blake3::hash(&bytes).to_hex().to_string()
}

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

fn envelope_json(
    label: &str,
    key: &MasterKey,
    kind: Kind,
    name: &[u8],
    plain: &[u8],
    c: Compression,
) -> Value {
    let env = key.seal(kind, name, plain, c);
    let (flag, back) = spec::open(&key.to_bytes()[..32], kind.byte(), name, &env).expect("opens");
    assert_eq!(back, plain);
    json!({
        "label": label,
        "kind": letter(kind),
        "name": hex::encode(name),
        "flag": flag,
        "envelope": hex::encode(&env),
        "plaintext": hex::encode(plain),
    })
}

fn node(name: &[u8], kind: NodeKind) -> Node {
    Node {
        name: name.to_vec(),
        kind,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        mtime: 1_714_564_800,
        mtime_nsec: 123_456_789,
        ctime: 1_714_564_801,
        ctime_nsec: 0,
        inode: 4242,
        dev: 64769,
        size: 0,
        content: vec![],
        list: None,
        paged: false,
        subtree: None,
        target: None,
    }
}

fn chunk_case(label: &str, params: ChunkerParams, generator: Value) -> Value {
    let data = generate_data(&generator);
    let lengths: Vec<usize> = params.chunks(&data[..]).map(|c| c.unwrap().len()).collect();
    assert_eq!(
        lengths,
        spec::chunk_lengths(
            &base_gear(),
            &data,
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
            params.seed
        ),
        "{label}: the library and the byte-at-a-time reading agree"
    );
    json!({
        "label": label,
        "params": chunker_json(&params),
        "generator": generator,
        "data_blake3": blake3::hash(&data).to_hex().to_string(),
        "chunk_lengths": lengths,
    })
}

fn generate() -> Value {
    let master_bytes = vector_master_bytes();
    let key = MasterKey::from_bytes(&master_bytes).unwrap();

    // (1) blob ids
    let plaintexts: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"abc".to_vec(),
        b"walden".to_vec(),
        (0..1025u32).map(|i| (i % 251) as u8).collect(),
    ];
    let blob_ids: Vec<Value> = plaintexts
        .iter()
        .map(
            |p| json!({"plaintext": hex::encode(p), "id": key.blob_id(Kind::DataBlob, p).to_hex()}),
        )
        .collect();

    // (5) a pack with two data blobs and one tree blob
    let raw_blob = b"walden pack vector: a data blob stored raw".to_vec();
    let zstd_blob = b"walden walden walden walden ".repeat(12);
    let mut file = node(b"16384", NodeKind::File);
    file.mode = 0o600;
    file.size = (raw_blob.len() + zstd_blob.len()) as u64;
    file.content = vec![
        key.blob_id(Kind::DataBlob, &raw_blob),
        key.blob_id(Kind::DataBlob, &zstd_blob),
    ];
    // A content list of three data blobs (a real one has more than 64).
    let listed: Vec<Vec<u8>> = (0..3u8)
        .map(|i| format!("walden list vector block {i}").into_bytes())
        .collect();
    let list_plain = walden::format::list::List {
        level: 0,
        ids: listed
            .iter()
            .map(|b| key.blob_id(Kind::DataBlob, b))
            .collect(),
    }
    .encode();
    let list_id = key.blob_id(Kind::ListBlob, &list_plain);
    let mut big = node(b"16385", NodeKind::File);
    big.size = listed.iter().map(|b| b.len() as u64).sum();
    big.list = Some(list_id);
    // A paged file of three 1 KiB pages in one run blob, and its map.
    let page_run: Vec<u8> = (0..3u8)
        .flat_map(|p| (0..1024u32).map(move |i| (i as u8) ^ p.wrapping_mul(37)))
        .collect();
    let page_run_id = key.blob_id(Kind::DataBlob, &page_run);
    let piece = walden::format::pagemap::Piece {
        page_size: 1024,
        pages: (0..3u16)
            .map(|i| walden::format::pagemap::PageRef {
                hash: key.page_hash(
                    &page_run[i as usize * 1024..(i as usize + 1) * 1024],
                    walden::format::pagemap::hash_offset(1024, i.into()),
                ),
                blob: page_run_id,
                index: i,
            })
            .collect(),
    };
    let piece_plain = piece.encode();
    let piece_id = key.blob_id(Kind::MapBlob, &piece_plain);
    let mut paged = node(b"16386", NodeKind::File);
    paged.size = page_run.len() as u64;
    paged.content = vec![piece_id];
    paged.paged = true;
    let mut link = node(b"pg_\xffwal", NodeKind::Symlink);
    link.mode = 0o777;
    link.target = Some(b"/mnt/wal/\xfe".to_vec());
    let tree = Tree {
        nodes: vec![file, big, paged, link],
    };
    let tree_json = tree.encode();
    let tree_id = key.blob_id(Kind::TreeBlob, &tree_json);

    let mut pb = PackBuilder::new();
    let mut pack_plain = Vec::new();
    let mut blobs = vec![
        (BlobType::Data, &raw_blob, Compression::None),
        (BlobType::Data, &zstd_blob, Compression::Zstd(1)),
        (BlobType::Tree, &tree_json, Compression::Zstd(1)),
        (BlobType::List, &list_plain, Compression::None),
    ];
    for b in &listed {
        blobs.push((BlobType::Data, b, Compression::None));
    }
    blobs.push((BlobType::Data, &page_run, Compression::Zstd(3)));
    blobs.push((BlobType::Map, &piece_plain, Compression::None));
    for (t, data, c) in blobs {
        let id = key.blob_id(t.seal_kind(), data);
        let env = key.seal(t.seal_kind(), &id.0, data, c);
        pb.add(t, id, data.len() as u32, &env);
        pack_plain.push(data.clone());
    }
    let (pack_id, pack_bytes, entries) = pb.finish(&key);
    assert_eq!(pack::decode(&key, &pack_id, &pack_bytes).unwrap(), entries);
    let pack_entries: Vec<Value> = entries
        .iter()
        .zip(&pack_plain)
        .map(|(e, p)| {
            let mut v = entry_json(e);
            v["plaintext"] = json!(hex::encode(p));
            v
        })
        .collect();

    // (4) an index naming that pack and one more
    let index = Index {
        packs: vec![
            IndexedPack {
                id: pack_id,
                size: pack_bytes.len() as u64,
                blobs: entries.clone(),
            },
            IndexedPack {
                id: Id::hash(b"walden vector: another pack"),
                size: 16_777_300,
                blobs: vec![PackEntry {
                    blob_type: BlobType::Tree,
                    id: Id::hash(b"walden vector: another tree"),
                    offset: 0,
                    length: 1_000,
                    raw_length: 2_500,
                }],
            },
        ],
    };
    let index_plain = index.encode();
    let index_id = Id::hash(b"walden vector: index file");

    // snapshot, config and lock documents
    let mut root = node(b"", NodeKind::Dir);
    root.mode = 0o700;
    root.subtree = Some(tree_id);
    let snapshot = Snapshot {
        version: walden::format::VERSION,
        time: "2024-05-01T12:00:00.000000000Z".into(),
        host: "vector-host".into(),
        user: "postgres".into(),
        paths: vec!["/var/lib/postgresql/16/main".into()],
        root,
        parent: None,
        tags: vec!["nightly".into()],
        summary: Summary {
            files: 1,
            dirs: 0,
            symlinks: 1,
            logical_bytes: (raw_blob.len() + zstd_blob.len()) as u64,
            files_read: 1,
            read_bytes: 0,
            new_blobs: 7,
            new_stored_bytes: entries.iter().map(|e| e.length as u64).sum(),
            new_packs: 1,
            duration_secs: 0.25,
            checksum_failures: vec!["base/16384/16385 block 7".into()],
            skipped: vec![],
        },
        postgres: Some(PgBackup {
            system_identifier: "7354920114326491234".into(),
            version_num: 150020,
            timeline: 1,
            start_lsn: "0/3000028".into(),
            stop_lsn: "0/3000100".into(),
            start_wal: "000000010000000000000003".into(),
            stop_wal: "000000010000000000000003".into(),
            start_time: "2024-05-01T12:00:00.000000000Z".into(),
            stop_time: "2024-05-01T12:00:00.250000000Z".into(),
            backup_type: "full".into(),
            wal_segment_size: 16 << 20,
            wal_included: false,
            wal_summaries: None,
        }),
    };
    let snapshot_json = snapshot.encode();
    let snapshot_id = Id::hash(b"walden vector: snapshot");

    let chunker_a = ChunkerParams {
        algorithm: ChunkerParams::ALGORITHM.into(),
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
        seed: 0x5eed_0123_4567_89ab,
    };
    let config = Config {
        version: walden::format::VERSION,
        id: Id::hash(b"walden vector: repository id"),
        chunker: chunker_a.clone(),
        pack_size: 16 << 20,
        zstd_level: 1,
    };
    let config_json = config.encode();

    let lock = Lock {
        time: "2024-05-01T12:00:00.000000000Z".into(),
        host: "vector-host".into(),
        pid: 4242,
        exclusive: false,
    };
    let lock_json = lock.encode();
    let lock_id = Id::hash(b"walden vector: lock");

    // A WAL record naming two of the pack's data blobs, and a restore point.
    let wal_record = walden::format::wal::WalRecord {
        version: walden::format::VERSION,
        system_identifier: "7354920114326491234".into(),
        name: "000000010000000000000003".into(),
        size: (raw_blob.len() + zstd_blob.len()) as u64,
        content: entries[..2]
            .iter()
            .map(|e| walden::format::wal::WalBlob {
                id: e.id,
                pack: pack_id,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            })
            .collect(),
        time: "2024-05-01T12:00:01.000000000Z".into(),
        host: "vector-host".into(),
    };
    let wal_json = wal_record.encode();
    let wal_name = "7354920114326491234/000000010000000000000003";
    let point = walden::format::point::RestorePoint {
        version: walden::format::VERSION,
        name: "before upgrade".into(),
        lsn: "0/3000200".into(),
        timeline: 1,
        time: "2024-05-01T12:00:02.000000000Z".into(),
        system_identifier: "7354920114326491234".into(),
        host: "vector-host".into(),
    };
    let point_json = point.encode();
    let point_id = key.blob_id(Kind::RestorePoint, &point_json);
    // A verification record: the pack found sound at a time.
    let verified = walden::format::verified::Verified {
        version: walden::format::VERSION,
        time: "2024-05-02T03:00:00.000000000Z".into(),
        host: "vector-host".into(),
        packs: [(pack_id.to_hex(), 1_714_618_800)].into_iter().collect(),
    };
    let verified_json = verified.encode();
    let verified_id = Id::hash(b"walden vector: verification record");

    // (2) envelopes
    let raw_text = b"walden envelope vector: stored raw".to_vec();
    let zstd_text = b"walden envelope vector: compressed with zstd. ".repeat(8);
    let envelopes = vec![
        envelope_json(
            "data blob, raw",
            &key,
            Kind::DataBlob,
            &key.blob_id(Kind::DataBlob, &raw_text).0,
            &raw_text,
            Compression::None,
        ),
        envelope_json(
            "data blob, zstd",
            &key,
            Kind::DataBlob,
            &key.blob_id(Kind::DataBlob, &zstd_text).0,
            &zstd_text,
            Compression::Zstd(3),
        ),
        envelope_json(
            "tree blob",
            &key,
            Kind::TreeBlob,
            &tree_id.0,
            &tree_json,
            Compression::Zstd(1),
        ),
        envelope_json(
            "config",
            &key,
            Kind::Config,
            b"",
            &config_json,
            Compression::None,
        ),
        envelope_json(
            "index file",
            &key,
            Kind::Index,
            &index_id.0,
            &index_plain,
            Compression::Zstd(3),
        ),
        envelope_json(
            "snapshot",
            &key,
            Kind::Snapshot,
            &snapshot_id.0,
            &snapshot_json,
            Compression::Zstd(3),
        ),
        envelope_json(
            "lock",
            &key,
            Kind::Lock,
            &lock_id.0,
            &lock_json,
            Compression::None,
        ),
        envelope_json(
            "content list blob",
            &key,
            Kind::ListBlob,
            &list_id.0,
            &list_plain,
            Compression::None,
        ),
        envelope_json(
            "WAL record",
            &key,
            Kind::WalRecord,
            wal_name.as_bytes(),
            &wal_json,
            Compression::Zstd(3),
        ),
        envelope_json(
            "restore point",
            &key,
            Kind::RestorePoint,
            &point_id.0,
            &point_json,
            Compression::Zstd(3),
        ),
        envelope_json(
            "verification record",
            &key,
            Kind::Verified,
            &verified_id.0,
            &verified_json,
            Compression::Zstd(3),
        ),
    ];
    let flags: Vec<u64> = envelopes.iter().map(|e| u64_of(&e["flag"])).collect();
    assert!(
        flags.contains(&0) && flags.contains(&1),
        "both flags are exercised"
    );

    // (3) a key file with cheap Argon2id parameters
    let key_file_id = Id::hash(b"walden vector: key file");
    let password = "correct horse battery staple";
    let kf = KeyFile::wrap(
        &key_file_id,
        &key,
        password.as_bytes(),
        KdfParams::new(64, 1, 1),
        "vector-host",
        "postgres",
    )
    .unwrap();
    let kf_json = String::from_utf8(kf.encode()).unwrap();

    // (6) chunk boundaries
    let chunker_large = ChunkerParams {
        algorithm: ChunkerParams::ALGORITHM.into(),
        min_size: 512 * 1024,
        avg_size: 1024 * 1024,
        max_size: 8 * 1024 * 1024,
        seed: 0x0123_4567_89ab_cdef,
    };
    let chunker_init = ChunkerParams {
        algorithm: ChunkerParams::ALGORITHM.into(),
        min_size: 256 * 1024,
        avg_size: 512 * 1024,
        max_size: 4 * 1024 * 1024,
        seed: 0xfedc_ba98_7654_3210,
    };
    let xs =
        |start: &str, length: u64| json!({"kind": "xorshift64", "start": start, "length": length});
    let chunking = vec![
        chunk_case(
            "small sizes, seeded",
            chunker_a.clone(),
            xs("0x9e3779b97f4a7c15", 100_001),
        ),
        chunk_case(
            "small sizes, seed 0 (the unmodified gear table)",
            ChunkerParams {
                seed: 0,
                ..chunker_a.clone()
            },
            xs("0x9e3779b97f4a7c15", 100_001),
        ),
        chunk_case(
            "small sizes, odd average (bits = round(log2 3000) = 12)",
            ChunkerParams {
                avg_size: 3000,
                ..chunker_a.clone()
            },
            xs("0x0000000000000001", 60_000),
        ),
        chunk_case(
            "zeros: no content boundaries",
            chunker_a.clone(),
            json!({"kind": "zeros", "length": 40_000}),
        ),
        chunk_case(
            "input shorter than min_size",
            chunker_a.clone(),
            xs("0x9e3779b97f4a7c15", 1_001),
        ),
        chunk_case(
            "512 KiB / 1 MiB / 8 MiB",
            chunker_large,
            xs("0x2545f4914f6cdd1d", 6 << 20),
        ),
        chunk_case(
            "256 KiB / 512 KiB / 4 MiB",
            chunker_init,
            xs("0x2545f4914f6cdd1d", 6 << 20),
        ),
    ];

    json!({
        "format_version": walden::format::VERSION,
        "about": "Test vectors for repo-format/ version 3. See repo-format/vectors/README.md. Hex is lowercase; ids are 64 hex digits.",
        "master_key": hex::encode(&master_bytes),
        "blob_ids": blob_ids,
        "envelopes": envelopes,
        "key_file": {
            "id": key_file_id.to_hex(),
            "password": password,
            "json": kf_json,
            "master_key": hex::encode(&master_bytes),
        },
        "config": {
            "json": String::from_utf8(config_json).unwrap(),
            "decoded": {
                "version": config.version,
                "id": config.id.to_hex(),
                "chunker": chunker_json(&config.chunker),
                "pack_size": config.pack_size,
                "zstd_level": config.zstd_level,
            },
        },
        "index": {
            "id": index_id.to_hex(),
            "plaintext": hex::encode(&index_plain),
            "decoded": index_json(&index),
        },
        "pack": {
            "id": pack_id.to_hex(),
            "bytes": hex::encode(&pack_bytes),
            "entries": pack_entries,
        },
        "tree": {
            "id": tree_id.to_hex(),
            "json": String::from_utf8(tree_json).unwrap(),
        },
        "snapshot": {
            "id": snapshot_id.to_hex(),
            "json": String::from_utf8(snapshot_json).unwrap(),
        },
        "lock": {
            "id": lock_id.to_hex(),
            "json": String::from_utf8(lock_json).unwrap(),
        },
        "page_map": {
            "id": piece_id.to_hex(),
            "plaintext": hex::encode(&piece_plain),
            "run_blob": page_run_id.to_hex(),
        },
        "list": {
            "id": list_id.to_hex(),
            "plaintext": hex::encode(&list_plain),
            "ids": listed.iter().map(|b| key.blob_id(Kind::DataBlob, b).to_hex()).collect::<Vec<_>>(),
        },
        "wal_record": {
            "object": format!("wal/{wal_name}"),
            "json": String::from_utf8(wal_json).unwrap(),
        },
        "restore_point": {
            "id": point_id.to_hex(),
            "json": String::from_utf8(point_json).unwrap(),
        },
        "verified": {
            "id": verified_id.to_hex(),
            "json": String::from_utf8(verified_json).unwrap(),
        },
        "chunking": {
            "gear_table_blake3": gear_checksum(&base_gear()),
            "cases": chunking,
        },
    })
}

#[test]
#[ignore = "rewrites repo-format/vectors/vectors.json; run deliberately"]
fn generate_vectors() {
    let v = generate();
    let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
    let path = vectors_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    println!("wrote {}", path.display());
}

// ---------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------

fn load() -> Value {
    let text =
        std::fs::read_to_string(vectors_path()).expect("repo-format/vectors/vectors.json exists");
    serde_json::from_str(&text).expect("vectors.json parses")
}

#[test]
fn check_vectors() {
    let v = load();
    assert_eq!(v["format_version"], 3);
    assert_eq!(walden::format::VERSION, 3);
    let master = unhex(&v["master_key"]);
    let key = MasterKey::from_bytes(&master).unwrap();
    let (seal_key, id_key) = master.split_at(32);
    let id_key: [u8; 32] = id_key.try_into().unwrap();

    // (1) blob ids: keyed BLAKE3 with the second half of the master key
    for b in v["blob_ids"].as_array().unwrap() {
        let p = unhex(&b["plaintext"]);
        let want = id_of(&b["id"]);
        assert_eq!(key.blob_id(Kind::DataBlob, &p), want, "library blob id");
        assert_eq!(
            blake3::keyed_hash(&id_key, &p).as_bytes(),
            &want.0,
            "spec blob id"
        );
        assert_ne!(Id::hash(&p), want, "blob ids are keyed");
    }

    // (2) envelopes
    for e in v["envelopes"].as_array().unwrap() {
        let label = e["label"].as_str().unwrap();
        let kind = kind_from_letter(e["kind"].as_str().unwrap());
        let name = unhex(&e["name"]);
        let env = unhex(&e["envelope"]);
        let plain = unhex(&e["plaintext"]);
        assert_eq!(
            key.open(kind, &name, &env).unwrap(),
            plain,
            "{label}: library open"
        );
        let (flag, p) = spec::open(seal_key, kind.byte(), &name, &env).expect("spec open");
        assert_eq!(p, plain, "{label}: spec open");
        assert_eq!(flag as u64, u64_of(&e["flag"]), "{label}: flag");
        if flag == 0 {
            assert_eq!(env.len(), plain.len() + 24 + 1 + 16, "{label}: raw size");
        } else {
            assert!(
                env.len() < plain.len() + 24 + 1 + 16,
                "{label}: compressed is smaller"
            );
        }
        for other in ALL_KINDS.iter().filter(|k| **k != kind) {
            assert!(
                key.open(*other, &name, &env).is_err(),
                "{label}: kind {} must not open",
                letter(*other)
            );
        }
        let mut wrong_name = name.clone();
        wrong_name.push(0);
        assert!(
            key.open(kind, &wrong_name, &env).is_err(),
            "{label}: name is bound"
        );
        for at in [0, 24, env.len() / 2, env.len() - 1] {
            let mut bad = env.clone();
            bad[at] ^= 0x01;
            assert!(
                key.open(kind, &name, &bad).is_err(),
                "{label}: flipped byte {at}"
            );
        }
    }

    // (3) key file
    let k = &v["key_file"];
    let kf_id = id_of(&k["id"]);
    let pw = k["password"].as_str().unwrap().as_bytes();
    let kf_text = k["json"].as_str().unwrap();
    let kf = KeyFile::decode(kf_text.as_bytes()).unwrap();
    assert_eq!(
        &kf.unwrap(&kf_id, pw).unwrap().to_bytes()[..],
        &unhex(&k["master_key"])[..],
        "library unwrap"
    );
    assert_eq!(
        kf.unwrap(&kf_id, b"not the password").unwrap_err().kind(),
        walden::error::Kind::WrongPassword
    );
    assert!(
        kf.unwrap(&Id([0; 32]), pw).is_err(),
        "the key file id is bound"
    );
    let raw: Value = serde_json::from_str(kf_text).unwrap();
    assert_eq!(raw["version"], 3);
    assert_eq!(raw["kdf"]["algorithm"], "argon2id");
    let salt = unhex(&raw["kdf"]["salt"]);
    assert_eq!(salt.len(), 32);
    let kek = spec::derive(
        pw,
        &salt,
        u64_of(&raw["kdf"]["memory_kib"]) as u32,
        u64_of(&raw["kdf"]["iterations"]) as u32,
        u64_of(&raw["kdf"]["parallelism"]) as u32,
    );
    let (flag, m) = spec::open(&kek, b'K', &kf_id.0, &unhex(&raw["master"])).expect("spec unwrap");
    assert_eq!(flag, 0);
    assert_eq!(m, unhex(&k["master_key"]), "spec unwrap");

    // config
    let c = &v["config"];
    let cfg = Config::decode(c["json"].as_str().unwrap().as_bytes()).unwrap();
    let d = &c["decoded"];
    assert_eq!(cfg.version as u64, u64_of(&d["version"]));
    assert_eq!(cfg.id, id_of(&d["id"]));
    assert_eq!(cfg.chunker, chunker_from(&d["chunker"]));
    assert_eq!(cfg.pack_size as u64, u64_of(&d["pack_size"]));
    assert_eq!(cfg.zstd_level as i64, d["zstd_level"].as_i64().unwrap());
    assert_eq!(
        cfg.encode(),
        c["json"].as_str().unwrap().as_bytes(),
        "config re-encodes identically"
    );
    assert!(
        sealed_plaintext(&v, "C", &[]).as_deref() == Some(c["json"].as_str().unwrap().as_bytes())
    );

    // (4) index
    let i = &v["index"];
    let plain = unhex(&i["plaintext"]);
    let want = index_from(&i["decoded"]);
    assert_eq!(Index::decode(&plain).unwrap(), want, "library index decode");
    assert_eq!(want.encode(), plain, "library index encode");
    let parsed = spec::parse_index(&plain);
    assert_eq!(parsed.len(), want.packs.len());
    for (p, w) in parsed.iter().zip(&want.packs) {
        assert_eq!((p.0, p.1), (w.id.0, w.size));
        let blobs: Vec<spec::Entry> = w
            .blobs
            .iter()
            .map(|b| (b.blob_type.byte(), b.id.0, b.offset, b.length, b.raw_length))
            .collect();
        assert_eq!(p.2, blobs, "spec index decode");
    }
    assert!(
        Index::decode(&plain[..plain.len() - 1]).is_err(),
        "truncated"
    );
    let mut extra = plain.clone();
    extra.push(0);
    assert!(Index::decode(&extra).is_err(), "trailing bytes");
    let index_id = id_of(&i["id"]);
    assert_eq!(sealed_plaintext(&v, "I", &index_id.0), Some(plain.clone()));

    // (5) pack
    let p = &v["pack"];
    let pack_id = id_of(&p["id"]);
    let bytes = unhex(&p["bytes"]);
    assert_eq!(
        Id::hash(&bytes),
        pack_id,
        "pack id is the unkeyed BLAKE3 of the pack"
    );
    let want: Vec<PackEntry> = p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(entry_from)
        .collect();
    assert_eq!(
        pack::decode(&key, &pack_id, &bytes).unwrap(),
        want,
        "library pack decode"
    );
    let spec_entries = spec::parse_pack(seal_key, &bytes);
    for ((s, w), e) in spec_entries
        .iter()
        .zip(&want)
        .zip(p["entries"].as_array().unwrap())
    {
        assert_eq!(
            *s,
            (w.blob_type.byte(), w.id.0, w.offset, w.length, w.raw_length),
            "spec pack entry"
        );
        let env = &bytes[w.offset as usize..(w.offset + w.length) as usize];
        let plain = unhex(&e["plaintext"]);
        assert_eq!(
            key.open(w.blob_type.seal_kind(), &w.id.0, env).unwrap(),
            plain
        );
        let (_, sp) = spec::open(seal_key, w.blob_type.seal_kind().byte(), &w.id.0, env).unwrap();
        assert_eq!(sp, plain);
        assert_eq!(sp.len() as u32, w.raw_length);
        let id_key_for = match w.blob_type {
            BlobType::Tree => blake3::derive_key(walden::seal::TREE_ID_CONTEXT, &id_key),
            BlobType::List => blake3::derive_key(walden::seal::LIST_ID_CONTEXT, &id_key),
            BlobType::Map => blake3::derive_key(walden::seal::MAP_ID_CONTEXT, &id_key),
            BlobType::Data => id_key,
        };
        assert_eq!(blake3::keyed_hash(&id_key_for, &sp).as_bytes(), &w.id.0);
    }
    assert_eq!(spec_entries.len(), want.len());
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    assert!(
        pack::decode(&key, &pack_id, &bad).is_err(),
        "a changed pack does not match its name"
    );

    // tree, snapshot, lock documents
    let t = &v["tree"];
    let tree_json = t["json"].as_str().unwrap().as_bytes();
    let tree = Tree::decode(tree_json).unwrap();
    assert_eq!(tree.encode(), tree_json, "tree re-encodes identically");
    assert_eq!(key.blob_id(Kind::TreeBlob, tree_json), id_of(&t["id"]));
    let tree_key = blake3::derive_key(walden::seal::TREE_ID_CONTEXT, &id_key);
    assert_eq!(
        blake3::keyed_hash(&tree_key, tree_json).as_bytes(),
        &id_of(&t["id"]).0,
        "spec tree id"
    );
    assert!(
        tree.nodes
            .iter()
            .any(|n| std::str::from_utf8(&n.name).is_err()),
        "a non-UTF-8 name is covered"
    );
    assert!(
        tree.nodes.windows(2).all(|w| w[0].name < w[1].name),
        "nodes sorted by name bytes"
    );
    assert!(
        want.iter()
            .any(|e| e.id == id_of(&t["id"]) && e.blob_type == BlobType::Tree)
    );

    let s = &v["snapshot"];
    let snap_json = s["json"].as_str().unwrap().as_bytes();
    let snap = Snapshot::decode(snap_json).unwrap();
    assert_eq!(snap.encode(), snap_json, "snapshot re-encodes identically");
    assert_eq!(snap.tree().unwrap(), id_of(&t["id"]));
    assert_eq!(
        sealed_plaintext(&v, "S", &id_of(&s["id"]).0).as_deref(),
        Some(snap_json)
    );

    let l = &v["lock"];
    let lock_json = l["json"].as_str().unwrap().as_bytes();
    let lock = Lock::decode(lock_json).unwrap();
    assert_eq!(lock.encode(), lock_json);
    assert_eq!(
        sealed_plaintext(&v, "L", &id_of(&l["id"]).0).as_deref(),
        Some(lock_json)
    );

    // content list, WAL record, restore point
    let li = &v["list"];
    let list_plain = unhex(&li["plaintext"]);
    let list = walden::format::list::List::decode(&list_plain).unwrap();
    assert_eq!(list.encode(), list_plain);
    // The spec's reading: "WLST", version 1, level, count, ids.
    assert_eq!(&list_plain[..4], b"WLST");
    assert_eq!(list_plain[4], 1);
    let count = u32::from_le_bytes(list_plain[6..10].try_into().unwrap()) as usize;
    assert_eq!(list_plain.len(), 10 + 32 * count);
    let spec_ids: Vec<String> = list_plain[10..].chunks(32).map(hex::encode).collect();
    let want_ids: Vec<String> = li["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert_eq!(spec_ids, want_ids, "spec list decode");
    let list_key = blake3::derive_key(walden::seal::LIST_ID_CONTEXT, &id_key);
    assert_eq!(
        blake3::keyed_hash(&list_key, &list_plain).as_bytes(),
        &id_of(&li["id"]).0,
        "spec list id"
    );
    assert!(
        tree.nodes.iter().any(|n| n.list == Some(id_of(&li["id"]))),
        "a node names the list"
    );
    // page map: "WMAP", version 1, page size, pages, blobs, runs, hashes.
    let pm = &v["page_map"];
    let pm_plain = unhex(&pm["plaintext"]);
    let piece = walden::format::pagemap::Piece::decode(&pm_plain).unwrap();
    assert_eq!(piece.encode(), pm_plain);
    assert_eq!(&pm_plain[..4], b"WMAP");
    assert_eq!(pm_plain[4], 1);
    let page_size = u32::from_le_bytes(pm_plain[5..9].try_into().unwrap()) as usize;
    let pages = u32::from_le_bytes(pm_plain[9..13].try_into().unwrap()) as usize;
    let nblobs = u16::from_le_bytes(pm_plain[13..15].try_into().unwrap()) as usize;
    assert_eq!((page_size, pages, nblobs), (1024, 3, 1));
    assert_eq!(
        hex::encode(&pm_plain[15..47]),
        pm["run_blob"].as_str().unwrap()
    );
    let run_entry = want
        .iter()
        .find(|e| e.id == id_of(&pm["run_blob"]))
        .unwrap();
    let run_plain = key
        .open(
            Kind::DataBlob,
            &run_entry.id.0,
            &bytes[run_entry.offset as usize..(run_entry.offset + run_entry.length) as usize],
        )
        .unwrap();
    // The spec's page hash: the page's BLAKE3 chaining value, keyed with
    // the id key, as the subtree at its place in the run; merged, the
    // values give the run's ordinary blob id.
    use blake3::hazmat::{HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root};
    let hashes = &pm_plain[pm_plain.len() - 8 * pages..];
    let mut cvs = Vec::new();
    for i in 0..pages {
        let h = blake3::Hasher::new_keyed(&id_key)
            .set_input_offset((i * page_size) as u64)
            .update(&run_plain[i * page_size..(i + 1) * page_size])
            .finalize_non_root();
        cvs.push(h);
        assert_eq!(&h[..8], &hashes[i * 8..i * 8 + 8], "spec page hash {i}");
    }
    // Three pages: the left subtree is the first two.
    let mode = Mode::KeyedHash(&id_key);
    let left = merge_subtrees_non_root(&cvs[0], &cvs[1], mode);
    assert_eq!(
        merge_subtrees_root(&left, &cvs[2], mode).as_bytes(),
        &id_of(&pm["run_blob"]).0,
        "the run's id from its page values"
    );
    let map_key = blake3::derive_key(walden::seal::MAP_ID_CONTEXT, &id_key);
    assert_eq!(
        blake3::keyed_hash(&map_key, &pm_plain).as_bytes(),
        &id_of(&pm["id"]).0,
        "spec map piece id"
    );
    assert!(
        tree.nodes
            .iter()
            .any(|n| n.paged && n.content == vec![id_of(&pm["id"])]),
        "a paged node names the piece"
    );

    let w = &v["wal_record"];
    let wal_json = w["json"].as_str().unwrap().as_bytes();
    let rec = walden::format::wal::WalRecord::decode(wal_json).unwrap();
    assert_eq!(rec.encode(), wal_json, "WAL record re-encodes identically");
    let aad = w["object"].as_str().unwrap().strip_prefix("wal/").unwrap();
    assert_eq!(
        sealed_plaintext(&v, "W", aad.as_bytes()).as_deref(),
        Some(wal_json)
    );
    for b in &rec.content {
        assert!(
            want.iter()
                .any(|e| e.id == b.id && e.offset == b.offset && e.length == b.length)
        );
    }
    let rp = &v["restore_point"];
    let rp_json = rp["json"].as_str().unwrap().as_bytes();
    let point = walden::format::point::RestorePoint::decode(rp_json).unwrap();
    assert_eq!(point.encode(), rp_json);
    assert_eq!(
        blake3::keyed_hash(&id_key, rp_json).as_bytes(),
        &id_of(&rp["id"]).0,
        "a restore point is named by the keyed id of its plaintext"
    );
    assert_eq!(
        sealed_plaintext(&v, "P", &id_of(&rp["id"]).0).as_deref(),
        Some(rp_json)
    );
    let vr = &v["verified"];
    let vr_json = vr["json"].as_str().unwrap().as_bytes();
    let record = walden::format::verified::Verified::decode(vr_json).unwrap();
    assert_eq!(record.encode(), vr_json);
    assert_eq!(record.times().count(), 1);
    assert_eq!(
        sealed_plaintext(&v, "V", &id_of(&vr["id"]).0).as_deref(),
        Some(vr_json)
    );

    // (6) chunking
    let ch = &v["chunking"];
    let gear = base_gear();
    assert_eq!(
        gear_checksum(&gear),
        ch["gear_table_blake3"].as_str().unwrap(),
        "gear table"
    );
    for (bits, m) in spec::MASKS {
        assert_eq!(fastcdc::v2020::MASKS[bits], m, "mask for 2^{bits}");
    }
    for c in ch["cases"].as_array().unwrap() {
        let label = c["label"].as_str().unwrap();
        let params = chunker_from(&c["params"]);
        params.validate().unwrap();
        let data = generate_data(&c["generator"]);
        assert_eq!(
            blake3::hash(&data).to_hex().as_str(),
            c["data_blake3"].as_str().unwrap(),
            "{label}: generator"
        );
        let want: Vec<usize> = c["chunk_lengths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| u64_of(n) as usize)
            .collect();
        let got: Vec<usize> = params.chunks(&data[..]).map(|c| c.unwrap().len()).collect();
        assert_eq!(got, want, "{label}: library chunker");
        let by_spec = spec::chunk_lengths(
            &gear,
            &data,
            params.min_size as usize,
            params.avg_size as usize,
            params.max_size as usize,
            params.seed,
        );
        assert_eq!(
            by_spec, want,
            "{label}: byte-at-a-time reading of chunking.md"
        );
        assert_eq!(want.iter().sum::<usize>(), data.len());
    }
}

/// The plaintext of the envelope of `kind` and `name` in the envelope list.
fn sealed_plaintext(v: &Value, kind: &str, name: &[u8]) -> Option<Vec<u8>> {
    v["envelopes"]
        .as_array()?
        .iter()
        .find(|e| e["kind"] == kind && unhex(&e["name"]) == name)
        .map(|e| unhex(&e["plaintext"]))
}
