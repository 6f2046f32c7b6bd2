//! Keys and the sealed envelope every stored byte goes through: zstd
//! compression (skipped when it does not shrink the data), then
//! XChaCha20-Poly1305 with a random 192-bit nonce and associated data that
//! binds the object's kind and name, so a blob cannot be passed off as another
//! or a snapshot file swapped for an index. Also the Argon2id derivation of
//! password keys. This is the only place nonces are made. It does no I/O and
//! knows nothing about where envelopes are stored (see `format::pack`).
//!
//! Envelope bytes (`repo-format/envelope.md`):
//! `nonce[24] || ciphertext(flag[1] || payload) || tag[16]`, where flag 0 means
//! the payload is the plaintext and flag 1 means it is a zstd frame of it.

use std::cell::RefCell;
use std::fmt;
use std::mem::MaybeUninit;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::id::Id;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes an envelope adds to its payload: nonce, flag byte and tag.
pub const OVERHEAD: usize = NONCE_LEN + 1 + TAG_LEN;
/// Prefix of every envelope's associated data; changes with the format major.
const AAD_PREFIX: &[u8] = b"walden1";

const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;

/// What an envelope holds. Its byte is part of the associated data, so an
/// envelope opened as the wrong kind fails authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DataBlob,
    TreeBlob,
    ListBlob,
    MapBlob,
    PackHeader,
    Index,
    Snapshot,
    Config,
    Lock,
    MasterKey,
    WalRecord,
    RestorePoint,
    Verified,
}

impl Kind {
    pub fn byte(self) -> u8 {
        match self {
            Kind::DataBlob => b'D',
            Kind::TreeBlob => b'T',
            Kind::ListBlob => b'B',
            Kind::MapBlob => b'M',
            Kind::PackHeader => b'H',
            Kind::Index => b'I',
            Kind::Snapshot => b'S',
            Kind::Config => b'C',
            Kind::Lock => b'L',
            Kind::MasterKey => b'K',
            Kind::WalRecord => b'W',
            Kind::RestorePoint => b'P',
            Kind::Verified => b'V',
        }
    }
}

/// Whether to try compressing a payload, and how hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd(i32),
}

/// A 256-bit XChaCha20-Poly1305 key. Not `Copy`, redacted when printed,
/// zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// The repository's master key: one key to seal envelopes and one to derive
/// blob ids. It is random, made once at `init`, and stored only wrapped by
/// password-derived keys.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    seal: SealKey,
    id: [u8; 32],
    /// Derived from `id`: tree blobs get ids from their own key, so a file
    /// whose bytes equal some tree's encoding can never be taken for it.
    tree_id: [u8; 32],
    /// Derived from `id`: the key of content list blobs' ids, for the same
    /// reason.
    list_id: [u8; 32],
    /// Derived from `id`: the key of page map blobs' ids.
    map_id: [u8; 32],
}

/// The BLAKE3 key-derivation context for the tree-id key.
pub const TREE_ID_CONTEXT: &str = "walden 2026-11-22 tree blob id key";
/// The BLAKE3 key-derivation context for the list-id key.
pub const LIST_ID_CONTEXT: &str = "walden 2026-12-01 list blob id key";
/// The BLAKE3 key-derivation context for the map-id key.
pub const MAP_ID_CONTEXT: &str = "walden 2026-12-01 map blob id key";

/// A page's BLAKE3 chaining value: the page hashed, with the id key, as the
/// subtree it would be of a data blob's id tree ([`MasterKey::page_cv`]).
pub type PageCv = [u8; 32];

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the operating system's random source failed");
}

impl MasterKey {
    pub const LEN: usize = 64;

    pub fn generate() -> MasterKey {
        let mut b = Zeroizing::new([0u8; 64]);
        random_bytes(&mut b[..]);
        MasterKey::from_bytes(&b[..]).expect("64 bytes")
    }

    pub fn from_bytes(b: &[u8]) -> Result<MasterKey> {
        if b.len() != Self::LEN {
            return Err(Error::corrupt(format!(
                "a master key must be {} bytes, found {}",
                Self::LEN,
                b.len()
            )));
        }
        let mut seal = [0u8; 32];
        let mut id = [0u8; 32];
        seal.copy_from_slice(&b[..32]);
        id.copy_from_slice(&b[32..]);
        let tree_id = blake3::derive_key(TREE_ID_CONTEXT, &id);
        let list_id = blake3::derive_key(LIST_ID_CONTEXT, &id);
        let map_id = blake3::derive_key(MAP_ID_CONTEXT, &id);
        Ok(MasterKey {
            seal: SealKey(seal),
            id,
            tree_id,
            list_id,
            map_id,
        })
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(64));
        v.extend_from_slice(&self.seal.0);
        v.extend_from_slice(&self.id);
        v
    }

    /// The id of a blob: BLAKE3 keyed with the repository's id key (data
    /// blobs) or the tree-id key derived from it (tree blobs), so equal
    /// plaintext cannot be confirmed by anyone without the key, and a data
    /// blob and a tree blob never share an id.
    pub fn blob_id(&self, kind: Kind, plaintext: &[u8]) -> Id {
        let key = match kind {
            Kind::TreeBlob => &self.tree_id,
            Kind::ListBlob => &self.list_id,
            Kind::MapBlob => &self.map_id,
            _ => &self.id,
        };
        Id(*blake3::keyed_hash(key, plaintext).as_bytes())
    }

    pub fn seal(&self, kind: Kind, name: &[u8], plaintext: &[u8], c: Compression) -> Vec<u8> {
        self.seal.seal(kind, name, plaintext, c)
    }

    /// [`SealKey::seal_into`] with the data key.
    pub fn seal_into(
        &self,
        kind: Kind,
        name: &[u8],
        plaintext: &[u8],
        c: Compression,
        out: &mut [MaybeUninit<u8>],
    ) -> usize {
        self.seal.seal_into(kind, name, plaintext, c, out)
    }

    /// A page's chaining value: the page hashed with the id key as the
    /// BLAKE3 subtree that starts `offset` bytes into a data blob (a
    /// multiple of BLAKE3's 1 KiB chunk, and of a power of two at least as
    /// long as the page). A page map keeps its first bytes as the page's
    /// hash, and [`run_id`](Self::run_id) merges the values of a run's
    /// pages into the run blob's id, so each byte of a full backup is
    /// hashed once, not once for its page and again for its blob.
    pub fn page_cv(&self, page: &[u8], offset: u64) -> PageCv {
        use blake3::hazmat::HasherExt;
        blake3::Hasher::new_keyed(&self.id)
            .set_input_offset(offset)
            .update(page)
            .finalize_non_root()
    }

    /// The short keyed hash a page map keeps of a page at `offset` (see
    /// [`page_cv`](Self::page_cv)): enough to tell a changed page (a chance
    /// collision is 2^-64), and keyed, so nobody without the key can make
    /// one.
    pub fn page_hash(&self, page: &[u8], offset: u64) -> [u8; crate::format::pagemap::HASH_LEN] {
        self.page_cv(page, offset)[..crate::format::pagemap::HASH_LEN]
            .try_into()
            .expect("8 bytes")
    }

    /// The data blob id of `run`, pages of `slot` bytes (the last may be
    /// shorter) whose chaining values at offsets 0, `slot`, 2·`slot`… are
    /// `cvs`: the same id as [`blob_id`](Self::blob_id), from the tree's
    /// top levels alone. `slot` must be a power of two of at least 1 KiB so
    /// that every page is a whole subtree; otherwise, and for a run of one
    /// page (whose hash is the tree's root), the run is hashed again.
    pub fn run_id(&self, cvs: &[PageCv], slot: usize, run: &[u8]) -> Id {
        let whole = slot.is_power_of_two()
            && slot >= blake3::CHUNK_LEN
            && cvs.len() >= 2
            && run.len() > (cvs.len() - 1) * slot
            && run.len() <= cvs.len() * slot;
        if !whole {
            return self.blob_id(Kind::DataBlob, run);
        }
        // BLAKE3's tree: the left subtree of `len` bytes is the largest
        // power of two of chunks shorter than it, so with pages of a power
        // of two of chunks every split falls between pages.
        fn merge(
            cvs: &[PageCv],
            slot: u64,
            len: u64,
            mode: blake3::hazmat::Mode,
        ) -> blake3::hazmat::ChainingValue {
            if cvs.len() == 1 {
                return cvs[0];
            }
            let left = blake3::hazmat::left_subtree_len(len);
            let k = (left / slot) as usize;
            let l = merge(&cvs[..k], slot, left, mode);
            let r = merge(&cvs[k..], slot, len - left, mode);
            blake3::hazmat::merge_subtrees_non_root(&l, &r, mode)
        }
        let mode = blake3::hazmat::Mode::KeyedHash(&self.id);
        let len = run.len() as u64;
        let left = blake3::hazmat::left_subtree_len(len);
        let k = (left / slot as u64) as usize;
        let l = merge(&cvs[..k], slot as u64, left, mode);
        let r = merge(&cvs[k..], slot as u64, len - left, mode);
        // Callers store through `SessionHandle::store_as`, which checks the
        // id against the run in debug builds.
        Id(*blake3::hazmat::merge_subtrees_root(&l, &r, mode).as_bytes())
    }

    pub fn open(&self, kind: Kind, name: &[u8], envelope: &[u8]) -> Result<Vec<u8>> {
        self.seal.open(kind, name, envelope)
    }

    /// See [`SealKey::open_to`].
    pub fn open_to(
        &self,
        kind: Kind,
        name: &[u8],
        envelope: &mut [u8],
        out: &mut [u8],
    ) -> Result<()> {
        self.seal.open_to(kind, name, envelope, out)
    }
}

thread_local! {
    // One zstd context per thread and level, for compressing and for
    // decompressing: making a context costs more than compressing a small
    // blob.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Whether `data` looks incompressible: a sample's byte histogram is close
/// to uniform (more than 7.5 bits of entropy per byte), as encrypted,
/// compressed or random data is. Checking costs a fraction of what trying
/// zstd on it does.
pub fn looks_incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    if data.len() < 2 * SAMPLE {
        return false;
    }
    let mut counts = [0u32; 256];
    // Two pieces: a page's header and tuples may differ from its middle.
    for piece in [
        &data[..SAMPLE / 2],
        &data[data.len() / 2..data.len() / 2 + SAMPLE / 2],
    ] {
        for b in piece {
            counts[*b as usize] += 1;
        }
    }
    let n = SAMPLE as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.5
}

/// Decompresses a zstd frame whose content size its header records (as
/// walden's frames do), with this thread's context.
fn decompress(frame: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .map_err(|_| "not a zstd frame".to_string())?;
    let Some(size) = size else {
        return zstd::decode_all(frame).map_err(|e| e.to_string());
    };
    if size > 1 << 31 {
        return Err(format!("a frame claiming {size} bytes"));
    }
    with_decompressor(|d| d.decompress(frame, size as usize))
}

/// Runs `f` with this thread's zstd decompression context, made on first
/// use.
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::result::Result<T, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        f(slot.as_mut().expect("made above")).map_err(|e| e.to_string())
    })
}

/// Decompresses one frame into `out`, which it must fill exactly.
fn decompress_to(frame: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n != out.len() as u64 => {
            return Err(format!(
                "a frame of {n} bytes where {} were expected",
                out.len()
            ));
        }
        Ok(_) => {}
        Err(_) => return Err("not a zstd frame".to_string()),
    }
    let want = out.len();
    match with_decompressor(|d| d.decompress_to_buffer(frame, out))? {
        n if n == want => Ok(()),
        n => Err(format!("{n} bytes where {want} were expected")),
    }
}

/// The most bytes an envelope of `len` plaintext bytes takes: zstd's bound
/// when compressing (a frame can be larger than its input), the input
/// otherwise, and the nonce, flag and tag.
pub fn envelope_bound(len: usize, c: Compression) -> usize {
    let room = match c {
        Compression::Zstd(_) => zstd::zstd_safe::compress_bound(len),
        Compression::None => 0,
    };
    OVERHEAD + room.max(len)
}

/// Compresses `data` into `out`, which holds zstd's bound, with this
/// thread's context; returns the frame's length, or `None` when the data
/// does not look compressible or did not get smaller.
fn compress_into(level: i32, data: &[u8], out: &mut [MaybeUninit<u8>]) -> Option<usize> {
    if looks_incompressible(data) {
        return None;
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = slot.as_mut()?;
        c.compress_to_buffer(
            data,
            &mut Spare {
                buf: out,
                filled: 0,
            },
        )
        .ok()
        .filter(|n| *n < data.len())
    })
}

/// Copies `data` to the start of `out`; returns its length.
fn copy_into(data: &[u8], out: &mut [MaybeUninit<u8>]) -> usize {
    out[..data.len()].write_copy_of_slice(data);
    data.len()
}

/// Uninitialized memory as zstd's output buffer: zstd writes there and
/// says how much, with no byte zeroed beforehand.
struct Spare<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    filled: usize,
}

// SAFETY: `as_mut_ptr` and `capacity` describe `buf`, and `filled_until(n)`
// is called only after zstd has written those `n` bytes there, so
// `as_slice` never covers uninitialized memory.
unsafe impl zstd::zstd_safe::WriteBuf for Spare<'_> {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `filled` bytes were written (see above).
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr().cast(), self.filled) }
    }
    fn capacity(&self) -> usize {
        self.buf.len()
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.buf.as_mut_ptr().cast()
    }
    unsafe fn filled_until(&mut self, n: usize) {
        self.filled = n;
    }
}

fn aad(kind: Kind, name: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_PREFIX.len() + 1 + name.len());
    a.extend_from_slice(AAD_PREFIX);
    a.push(kind.byte());
    a.extend_from_slice(name);
    a
}

impl SealKey {
    /// A key derived by BLAKE3 from `material` in `context`: for keys whose
    /// secret is already strong (a repository's own keys, a password kept
    /// in a file beside a cache), where a slow derivation buys nothing.
    pub fn derive(context: &str, material: &[u8]) -> SealKey {
        SealKey(blake3::derive_key(context, material))
    }

    /// Compresses (when that helps) and encrypts `plaintext` into a new
    /// envelope under a fresh random nonce.
    pub fn seal(&self, kind: Kind, name: &[u8], plaintext: &[u8], c: Compression) -> Vec<u8> {
        let mut out = Vec::with_capacity(envelope_bound(plaintext.len(), c));
        let n = self.seal_into(kind, name, plaintext, c, out.spare_capacity_mut());
        // SAFETY: seal_into initialized the first `n` bytes it was given.
        unsafe { out.set_len(n) };
        out
    }

    /// Seals `plaintext` as [`seal`](Self::seal) does, into `out`, which
    /// must hold [`envelope_bound`] bytes; returns the envelope's length,
    /// the bytes of `out` it initialized. Lets a caller seal many blobs
    /// side by side into one buffer (a WAL file's pack) instead of one new
    /// allocation each.
    pub fn seal_into(
        &self,
        kind: Kind,
        name: &[u8],
        plaintext: &[u8],
        c: Compression,
        out: &mut [MaybeUninit<u8>],
    ) -> usize {
        assert!(
            out.len() >= envelope_bound(plaintext.len(), c),
            "room for the envelope"
        );
        // Compressed straight into the envelope: not a frame copied into a
        // second buffer, and not zeroed first (zeroing every envelope took
        // a tenth of a backup's CPU).
        let (head, body) = out.split_at_mut(NONCE_LEN + 1);
        let (flag, len) = match c {
            Compression::Zstd(level) => match compress_into(level, plaintext, body) {
                Some(n) => (FLAG_ZSTD, n),
                None => (FLAG_RAW, copy_into(plaintext, body)),
            },
            Compression::None => (FLAG_RAW, copy_into(plaintext, body)),
        };
        for b in head.iter_mut() {
            b.write(0);
        }
        let body_end = NONCE_LEN + 1 + len;
        // SAFETY: the head was written just above and the body's first
        // `len` bytes by compress_into or copy_into.
        let env = unsafe { &mut *(&mut out[..body_end] as *mut [MaybeUninit<u8>] as *mut [u8]) };
        // The one place a nonce is made: 192 random bits, so collisions stay
        // negligible however much one key seals.
        random_bytes(&mut env[..NONCE_LEN]);
        let nonce = XNonce::try_from(&env[..NONCE_LEN]).expect("24 bytes");
        env[NONCE_LEN] = flag;
        let cipher = XChaCha20Poly1305::new(&Key::from(self.0));
        let tag = cipher
            .encrypt_inout_detached(&nonce, &aad(kind, name), (&mut env[NONCE_LEN..]).into())
            .expect("XChaCha20-Poly1305 seals any length walden produces");
        for (o, t) in out[body_end..body_end + TAG_LEN].iter_mut().zip(tag) {
            o.write(t);
        }
        body_end + TAG_LEN
    }

    /// Authenticates, decrypts and decompresses an envelope.
    pub fn open(&self, kind: Kind, name: &[u8], envelope: &[u8]) -> Result<Vec<u8>> {
        let mut env = envelope.to_vec();
        match self.unseal_in_place(kind, name, &mut env)?[0] {
            // The payload moved to the front of the copy already made, not
            // copied again.
            FLAG_RAW => {
                env.truncate(env.len() - TAG_LEN);
                env.drain(..NONCE_LEN + 1);
                Ok(env)
            }
            FLAG_ZSTD => {
                decompress(&env[NONCE_LEN + 1..env.len() - TAG_LEN]).map_err(undecompressable)
            }
            f => Err(unknown_flag(f)),
        }
    }

    /// As [`SealKey::open`], into `out`, which must be exactly the
    /// plaintext's length, decrypting `envelope` where it lies (it is left
    /// holding the plain payload). For callers that read many blobs into
    /// a buffer of their own, reused: no buffer is made per blob.
    pub fn open_to(
        &self,
        kind: Kind,
        name: &[u8],
        envelope: &mut [u8],
        out: &mut [u8],
    ) -> Result<()> {
        let body = self.unseal_in_place(kind, name, envelope)?;
        match body[0] {
            FLAG_RAW if body.len() - 1 == out.len() => {
                out.copy_from_slice(&body[1..]);
                Ok(())
            }
            FLAG_RAW => Err(Error::corrupt(format!(
                "authenticated payload of {} bytes, expected {}",
                body.len() - 1,
                out.len()
            ))),
            FLAG_ZSTD => decompress_to(&body[1..], out).map_err(undecompressable),
            f => Err(unknown_flag(f)),
        }
    }

    /// Checks an envelope's tag and decrypts its body in place; returns the
    /// body: the flag byte, then the payload.
    fn unseal_in_place<'a>(
        &self,
        kind: Kind,
        name: &[u8],
        envelope: &'a mut [u8],
    ) -> Result<&'a [u8]> {
        if envelope.len() < OVERHEAD {
            return Err(Error::corrupt(format!(
                "envelope of {} bytes is shorter than the {OVERHEAD}-byte minimum",
                envelope.len()
            )));
        }
        let nonce = XNonce::try_from(&envelope[..NONCE_LEN]).expect("24 bytes");
        let body_end = envelope.len() - TAG_LEN;
        let tag = Tag::try_from(&envelope[body_end..]).expect("16 bytes");
        let body = &mut envelope[NONCE_LEN..body_end];
        let cipher = XChaCha20Poly1305::new(&Key::from(self.0));
        cipher
            .decrypt_inout_detached(&nonce, &aad(kind, name), (&mut *body).into(), &tag)
            .map_err(|_| {
                Error::corrupt(
                    "envelope failed authentication (wrong key, or the bytes were altered)",
                )
            })?;
        Ok(body)
    }
}

fn undecompressable(e: String) -> Error {
    Error::corrupt(format!(
        "authenticated zstd payload does not decompress: {e}"
    ))
}

fn unknown_flag(f: u8) -> Error {
    Error::corrupt(format!("unknown envelope flag {f}"))
}

/// Argon2id parameters of one password key, stored in its key file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    #[serde(with = "hex_bytes")]
    pub salt: Vec<u8>,
}

impl KdfParams {
    pub const ALGORITHM: &'static str = "argon2id";
    /// 4 GiB: the most a key file may ask of a machine.
    pub const MAX_MEMORY_KIB: u32 = 4 << 20;
    pub const MAX_ITERATIONS: u32 = 1000;

    /// Fresh parameters with a random 32-byte salt.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> KdfParams {
        let mut salt = vec![0u8; 32];
        random_bytes(&mut salt);
        KdfParams {
            algorithm: Self::ALGORITHM.to_string(),
            memory_kib,
            iterations,
            parallelism,
            salt,
        }
    }

    /// Derives the key that wraps the master key from a password.
    pub fn derive(&self, password: &[u8]) -> Result<SealKey> {
        if self.algorithm != Self::ALGORITHM {
            return Err(Error::unsupported(format!(
                "key derivation {:?} is not supported (only {})",
                self.algorithm,
                Self::ALGORITHM
            )));
        }
        // Key files are not authenticated: refuse costs no honest key uses,
        // so a planted key file cannot exhaust memory or time.
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > 64
        {
            return Err(Error::unsupported(format!(
                "Argon2id cost too high (memory {} KiB, {} iterations, parallelism {})",
                self.memory_kib, self.iterations, self.parallelism
            )));
        }
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| Error::corrupt(format!("invalid Argon2id parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, &self.salt, &mut out)
            .map_err(|e| Error::invalid(format!("Argon2id derivation failed: {e}")))?;
        let key = SealKey(out);
        out.zeroize();
        Ok(key)
    }
}

/// Serde helper: bytes as lowercase hex.
pub mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_from_page_values_is_the_blob_id() {
        let key = MasterKey::generate();
        let mut data = vec![0u8; 130 * 16384];
        random_bytes(&mut data);
        for slot in [512usize, 1024, 8192, 16384] {
            for pages in [1usize, 2, 3, 5, 8, 31, 64, 127, 128, 129] {
                for tail in [slot, slot - 1, 100, 1] {
                    let run = &data[..(pages - 1) * slot + tail];
                    let step = slot.next_power_of_two().max(1024);
                    let cvs: Vec<PageCv> = run
                        .chunks(slot)
                        .enumerate()
                        .map(|(i, p)| key.page_cv(p, (i * step) as u64))
                        .collect();
                    assert_eq!(
                        key.run_id(&cvs, slot, run),
                        key.blob_id(Kind::DataBlob, run),
                        "{pages} pages of {slot}, the last {tail} bytes"
                    );
                }
            }
        }
    }

    #[test]
    fn a_page_hash_depends_on_the_page_its_place_and_the_key() {
        let key = MasterKey::generate();
        let page = vec![7u8; 8192];
        let h = key.page_hash(&page, 8192);
        assert_eq!(h, key.page_hash(&page, 8192));
        assert_ne!(h, key.page_hash(&page, 16384));
        let mut other = page.clone();
        other[8191] ^= 1;
        assert_ne!(h, key.page_hash(&other, 8192));
        assert_ne!(h, MasterKey::generate().page_hash(&page, 8192));
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let k = MasterKey::generate();
        let text = b"hello hello hello hello hello hello hello".repeat(20);
        let e = k.seal(Kind::DataBlob, b"n1", &text, Compression::Zstd(3));
        assert!(e.len() < text.len(), "compressible text is compressed");
        assert_eq!(k.open(Kind::DataBlob, b"n1", &e).unwrap(), text);
        assert!(k.open(Kind::TreeBlob, b"n1", &e).is_err(), "kind is bound");
        assert!(k.open(Kind::DataBlob, b"n2", &e).is_err(), "name is bound");
        let mut bad = e.clone();
        bad[30] ^= 1;
        assert!(
            k.open(Kind::DataBlob, b"n1", &bad).is_err(),
            "tampering is caught"
        );
        let other = MasterKey::generate();
        assert!(other.open(Kind::DataBlob, b"n1", &e).is_err());
    }

    #[test]
    fn opened_into_a_buffer_as_open_returns_or_refused() {
        let k = MasterKey::generate();
        let text = b"a page of WAL, a page of WAL ".repeat(2000);
        let mut random = vec![0u8; 70_000];
        random_bytes(&mut random);
        for data in [&text[..], &random[..]] {
            let e = k.seal(Kind::DataBlob, b"n", data, Compression::Zstd(3));
            let mut out = vec![0u8; data.len()];
            k.open_to(Kind::DataBlob, b"n", &mut e.clone(), &mut out)
                .unwrap();
            assert_eq!(out, data);
            for len in [data.len() - 1, data.len() + 1] {
                let mut out = vec![0u8; len];
                let err = k.open_to(Kind::DataBlob, b"n", &mut e.clone(), &mut out);
                assert!(err.is_err(), "{len} bytes of room for {}", data.len());
            }
            let mut bad = e.clone();
            bad[30] ^= 1;
            assert!(k.open_to(Kind::DataBlob, b"n", &mut bad, &mut out).is_err());
            assert!(
                k.open_to(Kind::DataBlob, b"m", &mut e.clone(), &mut out)
                    .is_err()
            );
        }
    }

    #[test]
    fn incompressible_is_told_cheaply() {
        let mut random = vec![0u8; 65536];
        random_bytes(&mut random);
        assert!(looks_incompressible(&random));
        let text = b"line of some text 12345\n".repeat(3000);
        assert!(!looks_incompressible(&text));
        let mut page = vec![0u8; 8192];
        page[8000..].copy_from_slice(&[7u8; 192]);
        assert!(!looks_incompressible(&page));
    }

    #[test]
    fn incompressible_is_stored_raw() {
        let k = MasterKey::generate();
        let mut data = vec![0u8; 4096];
        random_bytes(&mut data);
        let e = k.seal(Kind::DataBlob, b"", &data, Compression::Zstd(3));
        assert_eq!(e.len(), data.len() + OVERHEAD);
        assert_eq!(k.open(Kind::DataBlob, b"", &e).unwrap(), data);
    }

    #[test]
    fn sealed_into_a_slot_of_a_larger_buffer_opens_as_sealed_alone() {
        let k = MasterKey::generate();
        let mut random = vec![0u8; 70_000];
        random_bytes(&mut random);
        let text = b"a page of WAL, a page of WAL ".repeat(2000);
        for (data, c) in [
            (&text[..], Compression::Zstd(1)),
            (&random[..], Compression::Zstd(1)),
            (&text[..], Compression::None),
            (&b""[..], Compression::Zstd(1)),
        ] {
            let bound = envelope_bound(data.len(), c);
            // Two slots side by side: the second must not touch the first.
            let mut buf: Vec<MaybeUninit<u8>> = vec![MaybeUninit::new(0xAB); 2 * bound];
            let (first, second) = buf.split_at_mut(bound);
            let n = k.seal_into(Kind::DataBlob, b"n", data, c, second);
            assert!(n <= bound);
            assert!(first.iter().all(|b| unsafe { b.assume_init() } == 0xAB));
            let env: Vec<u8> = second[..n]
                .iter()
                .map(|b| unsafe { b.assume_init() })
                .collect();
            assert_eq!(env.len(), k.seal(Kind::DataBlob, b"n", data, c).len());
            assert_eq!(k.open(Kind::DataBlob, b"n", &env).unwrap(), data);
        }
    }

    #[test]
    fn data_and_tree_ids_differ() {
        let k = MasterKey::generate();
        let x = b"{\"nodes\":[]}";
        assert_ne!(k.blob_id(Kind::DataBlob, x), k.blob_id(Kind::TreeBlob, x));
        assert_eq!(k.blob_id(Kind::DataBlob, x), k.blob_id(Kind::DataBlob, x));
    }

    #[test]
    fn absurd_kdf_costs_are_refused() {
        let mut p = KdfParams::new(64, 1, 1);
        p.memory_kib = u32::MAX;
        assert_eq!(
            p.derive(b"pw").unwrap_err().kind(),
            crate::error::Kind::Unsupported
        );
    }

    #[test]
    fn nonces_differ() {
        let k = MasterKey::generate();
        let a = k.seal(Kind::Config, b"", b"x", Compression::None);
        let b = k.seal(Kind::Config, b"", b"x", Compression::None);
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    #[test]
    fn kdf_is_deterministic_per_salt() {
        let p = KdfParams::new(64, 1, 1);
        let k1 = p.derive(b"pw").unwrap();
        let k2 = p.derive(b"pw").unwrap();
        let k3 = p.derive(b"other").unwrap();
        let e = k1.seal(Kind::MasterKey, b"", b"secret", Compression::None);
        assert_eq!(k2.open(Kind::MasterKey, b"", &e).unwrap(), b"secret");
        assert!(k3.open(Kind::MasterKey, b"", &e).is_err());
        assert_eq!(format!("{k1:?}"), "SealKey(<redacted>)");
    }
}
