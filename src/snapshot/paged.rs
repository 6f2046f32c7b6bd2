//! Files stored by pages (`format::pagemap`): writing one from its pages in
//! order, against the page map of the same file in the parent snapshot, and
//! reading a page map back. A page whose hash equals the parent's at the
//! same place is not stored again: the new map points at the parent's blob.
//! Changed pages are gathered, in file order, into blobs of up to
//! [`CHANGED_RUN`] pages; a file with no parent map is stored in runs of
//! [`FULL_RUN`] pages, aligned, so an unchanged file in a later full backup
//! stores the same blobs and deduplicates.

use crate::error::{Error, Result};
use crate::format::BlobType;
use crate::format::pagemap::{
    CHANGED_RUN, FULL_RUN, HASH_LEN, PAGES_PER_PIECE, PageRef, Piece, hash_offset,
};
use crate::format::tree::Node;
use crate::id::Id;
use crate::repo::Repo;
use crate::repo::session::SessionHandle;
use crate::seal::PageCv;

/// Builds a paged file's map as its pages arrive.
pub struct PagedWriter<'a> {
    session: &'a SessionHandle,
    page_size: usize,
    parent: Option<Vec<PageRef>>,
    run_limit: usize,
    pages: Vec<PageRef>,
    /// Changed pages waiting to become one blob, and where they go.
    pending: Vec<u8>,
    pending_at: Vec<usize>,
    /// In a full backup, the pending pages' chaining values.
    pending_cv: Vec<PageCv>,
    /// Pages stored again, for the summary.
    pub changed: u64,
}

impl<'a> PagedWriter<'a> {
    /// A writer for a file of `page_size` pages, against `parent`'s map when
    /// there is one.
    pub fn new(session: &'a SessionHandle, page_size: usize, parent: Option<Vec<PageRef>>) -> Self {
        let run_limit = if parent.is_some() {
            CHANGED_RUN
        } else {
            FULL_RUN
        };
        PagedWriter {
            session,
            page_size,
            parent,
            run_limit,
            pages: Vec::new(),
            pending: Vec::with_capacity(run_limit * page_size),
            pending_at: Vec::with_capacity(run_limit),
            pending_cv: Vec::with_capacity(run_limit),
            changed: 0,
        }
    }

    /// Adds the file's next page (the last may be short).
    pub fn push(&mut self, page: &[u8]) -> Result<()> {
        let n = self.pages.len();
        let cv = self
            .session
            .repo()
            .key()
            .page_cv(page, hash_offset(self.page_size, n as u64));
        let hash: [u8; HASH_LEN] = cv[..HASH_LEN].try_into().expect("8 bytes");
        if let Some(p) = self.parent.as_ref().and_then(|p| p.get(n))
            && p.hash == hash
        {
            self.pages.push(*p);
            return Ok(());
        }
        self.pages.push(PageRef {
            hash,
            blob: Id([0; 32]),
            index: 0,
        });
        self.pending.extend_from_slice(page);
        self.pending_at.push(n);
        if self.parent.is_none() {
            // A full run starts at a multiple of FULL_RUN pages, every page
            // at the place its hash was taken from: the page values make
            // the run's id.
            self.pending_cv.push(cv);
        }
        self.changed += 1;
        if self.pending_at.len() >= self.run_limit {
            self.flush()?;
        }
        Ok(())
    }

    /// How many pages the parent's map has (0 without a parent).
    pub fn parent_len(&self) -> usize {
        self.parent.as_ref().map_or(0, Vec::len)
    }

    /// The parent's page `n`: a page a caller knows unchanged (a WAL
    /// summary) need not be read.
    pub fn parent_page(&self, n: usize) -> Option<PageRef> {
        self.parent.as_ref().and_then(|p| p.get(n)).copied()
    }

    /// Adds page `n` from the parent's map without reading it.
    pub fn reuse(&mut self, r: PageRef) {
        self.pages.push(r);
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending_at.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(self.run_limit * self.page_size),
        );
        // Changed pages gathered in an incremental compress better at a
        // higher zstd level than the repository's: heap pages at 3 (by 13
        // to 19% on pgbench's), index pages at 6, where zstd starts lazy
        // matching (a 60 s pgbench incremental: 8% smaller for 1.5 times
        // the CPU; every page at 6 saved 4% more for 2.2 times this CPU;
        // `benches/README.md`). Full runs stay at the repository's level,
        // for speed.
        let first = &data[..self.page_size.min(data.len())];
        let level = (self.run_limit == CHANGED_RUN).then_some(
            match crate::pg::page::has_special_space(first) {
                true => 6,
                false => 3,
            },
        );
        let id = if self.pending_cv.is_empty() {
            self.session.store_at_level(BlobType::Data, data, level)?
        } else {
            let key = self.session.repo().key();
            let id = key.run_id(&self.pending_cv, self.page_size, &data);
            self.pending_cv.clear();
            self.session.store_as(BlobType::Data, id, data, level)?
        };
        for (i, n) in self.pending_at.drain(..).enumerate() {
            self.pages[n].blob = id;
            self.pages[n].index = i as u16;
        }
        Ok(())
    }

    /// Stores the last changed pages and the map's pieces; returns the
    /// pieces' ids in order.
    pub fn finish(mut self) -> Result<Vec<Id>> {
        self.flush()?;
        store_map(self.session, self.page_size, &self.pages)
    }
}

/// Stores a page map as pieces of [`PAGES_PER_PIECE`] pages.
pub fn store_map(session: &SessionHandle, page_size: usize, pages: &[PageRef]) -> Result<Vec<Id>> {
    pages
        .chunks(PAGES_PER_PIECE)
        .map(|c| {
            let piece = Piece {
                page_size: page_size as u32,
                pages: c.to_vec(),
            };
            session.store(BlobType::Map, piece.encode())
        })
        .collect()
}

/// The page map of paged file `node`, every page in order.
pub async fn read_map(repo: &Repo, node: &Node) -> Result<(usize, Vec<PageRef>)> {
    let pieces = super::content::ids(repo, node).await?;
    let mut out = Vec::new();
    let mut page_size = 0usize;
    for id in &pieces {
        if repo.locate(id)?.blob_type != BlobType::Map {
            return Err(Error::corrupt(format!(
                "{}: blob {id} is not a page map piece",
                node.name_lossy()
            )));
        }
    }
    // A file's pieces were stored together: one read gets them all.
    let plains = repo.read_blobs(&pieces).await?;
    for (id, plain) in pieces.iter().zip(plains) {
        let piece = Piece::decode(&plain)
            .map_err(|e| e.context(format!("{}: map piece {id}", node.name_lossy())))?;
        if page_size != 0 && piece.page_size as usize != page_size {
            return Err(Error::corrupt(format!(
                "{}: map pieces of different page sizes",
                node.name_lossy()
            )));
        }
        page_size = piece.page_size as usize;
        out.extend(piece.pages);
    }
    Ok((page_size.max(1), out))
}

/// The distinct data blobs a paged file's map names, in first-use order.
pub fn blobs_of(pages: &[PageRef]) -> Vec<Id> {
    let mut seen = std::collections::HashSet::new();
    pages
        .iter()
        .filter(|p| seen.insert(p.blob))
        .map(|p| p.blob)
        .collect()
}
