//! Criterion benches of the pipeline's CPU stages, one group per stage:
//! chunking (FastCDC with a seed), blob ids (keyed BLAKE3), the per-page
//! work of a backup (PostgreSQL's checksum, page hashes and a run's id),
//! sealing and
//! opening (zstd + XChaCha20-Poly1305) on compressible and random data, and
//! pack encoding, and WAL verification (`verify --wal`'s walk of pages and
//! records with their CRC-32C, on synthetic WAL laid out as a server lays
//! it out). Run with `cargo bench --bench pipeline`; figures in
//! `benches/README.md`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

use walden::chunk::ChunkerParams;
use walden::format::BlobType;
use walden::format::pack::PackBuilder;
use walden::seal::{Compression, Kind, MasterKey};

fn random(n: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

fn text(n: usize) -> Vec<u8> {
    let words = [
        "select", "insert", "balance", "account", "branch", "teller", "history", "12345", "update",
        "where",
    ];
    let mut v = Vec::with_capacity(n + 16);
    let mut i = 0usize;
    while v.len() < n {
        v.extend_from_slice(words[(i * 7 + i / 3) % words.len()].as_bytes());
        v.push(if i.is_multiple_of(11) { b'\n' } else { b' ' });
        i += 1;
    }
    v.truncate(n);
    v
}

fn chunking(c: &mut Criterion) {
    let data = random(32 << 20);
    let p = ChunkerParams::generate();
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc_default_params", |b| {
        b.iter(|| p.chunks(&data[..]).map(|c| c.unwrap().len()).sum::<usize>())
    });
    g.finish();
}

fn ids(c: &mut Criterion) {
    let key = MasterKey::generate();
    let data = random(1 << 20);
    let mut g = c.benchmark_group("id");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("keyed_blake3_1MiB", |b| {
        b.iter(|| key.blob_id(Kind::DataBlob, black_box(&data)))
    });
    g.finish();
}

/// Per-page work of a backup over 1 MiB of 8 KiB pages: PostgreSQL's page
/// checksum and the page hash a page map keeps.
fn pages(c: &mut Criterion) {
    let key = MasterKey::generate();
    let data = random(1 << 20);
    let mut g = c.benchmark_group("page");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("pg_checksum_128_pages", |b| {
        b.iter(|| {
            data.chunks(8192)
                .enumerate()
                .map(|(i, p)| walden::pg::page::checksum(black_box(p), i as u32) as u64)
                .sum::<u64>()
        })
    });
    // A full run's hashing: every page's value, then the run's id. Once
    // from the page values, once (as before) over the run's bytes again.
    let page_values = |data: &[u8]| -> Vec<_> {
        data.chunks(8192)
            .enumerate()
            .map(|(i, p)| key.page_cv(black_box(p), (i * 8192) as u64))
            .collect()
    };
    g.bench_function("page_values_and_run_id_128_pages", |b| {
        b.iter(|| key.run_id(&page_values(&data), 8192, &data))
    });
    g.bench_function("page_values_and_blob_id_128_pages", |b| {
        b.iter(|| (page_values(&data), key.blob_id(Kind::DataBlob, &data)))
    });
    g.finish();
}

fn sealing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let mut g = c.benchmark_group("seal");
    for (name, data) in [("text", text(1 << 20)), ("random", random(1 << 20))] {
        g.throughput(Throughput::Bytes(data.len() as u64));
        let id = key.blob_id(Kind::DataBlob, &data);
        g.bench_function(format!("seal_zstd1_{name}_1MiB"), |b| {
            b.iter(|| {
                key.seal(
                    Kind::DataBlob,
                    &id.0,
                    black_box(&data),
                    Compression::Zstd(1),
                )
            })
        });
        let env = key.seal(Kind::DataBlob, &id.0, &data, Compression::Zstd(1));
        g.bench_function(format!("open_{name}_1MiB"), |b| {
            b.iter(|| key.open(Kind::DataBlob, &id.0, black_box(&env)).unwrap())
        });
    }
    g.finish();
}

fn packing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let blob = random(1 << 20);
    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(16 << 20));
    g.sample_size(20);
    g.bench_function("build_16x1MiB", |b| {
        b.iter(|| {
            let mut p = PackBuilder::new();
            for i in 0..16u8 {
                let mut id = key.blob_id(Kind::DataBlob, &blob);
                id.0[0] = i;
                p.add(BlobType::Data, id, blob.len() as u32, &blob);
            }
            p.finish(&key).0
        })
    });
    g.finish();
}

/// `segments` 1 MiB segments of 17 WAL (PostgreSQL 17's page magic),
/// records of 64 to 2,000 bytes flowing over page and segment boundaries.
fn synthetic_wal(segments: u64) -> Vec<u8> {
    const SEG: u64 = 1 << 20;
    const BLOCK: u64 = 8192;
    let end = segments * SEG;
    let mut buf: Vec<u8> = Vec::with_capacity(end as usize);
    let payloads = random(1 << 20);
    let (mut prev, mut i) = (0u64, 0usize);
    // Appends `bytes`, writing a page header at each page boundary; `rest`
    // is how much of a record remains when a page starts inside one.
    let put = |buf: &mut Vec<u8>, bytes: &[u8]| {
        let mut done = 0;
        while done < bytes.len() && (buf.len() as u64) < end {
            let at = buf.len() as u64;
            if at.is_multiple_of(BLOCK) {
                let long = at.is_multiple_of(SEG);
                let rest = if done > 0 {
                    (bytes.len() - done) as u32
                } else {
                    0
                };
                let info: u16 =
                    0x0004 | if long { 0x0002 } else { 0 } | if rest > 0 { 0x0001 } else { 0 };
                buf.extend_from_slice(&0xD116u16.to_le_bytes());
                buf.extend_from_slice(&info.to_le_bytes());
                buf.extend_from_slice(&1u32.to_le_bytes());
                buf.extend_from_slice(&at.to_le_bytes());
                buf.extend_from_slice(&rest.to_le_bytes());
                buf.extend_from_slice(&[0; 4]);
                if long {
                    buf.extend_from_slice(&7u64.to_le_bytes());
                    buf.extend_from_slice(&(SEG as u32).to_le_bytes());
                    buf.extend_from_slice(&(BLOCK as u32).to_le_bytes());
                }
            }
            let room = (BLOCK - buf.len() as u64 % BLOCK) as usize;
            let n = room
                .min(bytes.len() - done)
                .min((end - buf.len() as u64) as usize);
            buf.extend_from_slice(&bytes[done..done + n]);
            done += n;
        }
    };
    while (buf.len() as u64) < end {
        while !buf.len().is_multiple_of(8) {
            buf.push(0);
        }
        let at = buf.len() as u64
            + if (buf.len() as u64).is_multiple_of(BLOCK) {
                if (buf.len() as u64).is_multiple_of(SEG) {
                    40
                } else {
                    24
                }
            } else {
                0
            };
        let len = 64 + (i * 7919) % 1937;
        let payload = &payloads[(i * 4099) % (1 << 19)..][..len];
        let total = (24 + len) as u32;
        let mut r = Vec::with_capacity(24 + len);
        r.extend_from_slice(&total.to_le_bytes());
        r.extend_from_slice(&77u32.to_le_bytes());
        r.extend_from_slice(&prev.to_le_bytes());
        r.extend_from_slice(&[0, 10, 0, 0]);
        let crc = crc32c::crc32c_append(crc32c::crc32c(payload), &r[..20]);
        r.extend_from_slice(&crc.to_le_bytes());
        r.extend_from_slice(payload);
        put(&mut buf, &r);
        prev = at;
        i += 1;
    }
    buf.truncate(end as usize);
    buf
}

fn wal_verify(c: &mut Criterion) {
    let segments = 64u64;
    let wal = synthetic_wal(segments);
    let mut g = c.benchmark_group("wal_verify");
    g.throughput(Throughput::Bytes(wal.len() as u64));
    g.bench_function("stream_64MiB", |b| {
        b.iter(|| {
            let mut s = walden::pg::wal::WalStream::new(1 << 20).unwrap();
            let mut records = 0;
            for (n, seg) in wal.chunks(1 << 20).enumerate() {
                let name = walden::pg::lsn::segment_name(1, n as u64, 1 << 20);
                let r = s.feed(&name, black_box(seg)).unwrap();
                assert!(r.problems.is_empty(), "{:?}", &r.problems[..1]);
                records += r.records;
            }
            records
        })
    });
    g.finish();
}

criterion_group!(benches, chunking, ids, pages, sealing, packing, wal_verify);
criterion_main!(benches);
