//! Criterion benches of the pipeline's CPU stages, one group per stage:
//! chunking (FastCDC with a seed), blob ids (keyed BLAKE3), sealing and
//! opening (zstd + XChaCha20-Poly1305) on compressible and random data, and
//! pack encoding. Run with `cargo bench --bench pipeline`; figures in
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

criterion_group!(benches, chunking, ids, sealing, packing);
criterion_main!(benches);
