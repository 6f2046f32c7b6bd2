//! The bytes of WAL segments: page headers (short, and the long one that
//! opens each segment), a cheap check of a segment's first page for
//! `wal-push`, and [`WalStream`], which walks every page and every record of
//! consecutive segments of a timeline, reassembles records that span pages
//! and segments, and checks each record's CRC-32C as PostgreSQL does. It
//! reports problems by segment name and LSN, and says where the WAL ends,
//! where an `XLOG_SWITCH` cut a segment short, and where segments are
//! missing. Pure: it is handed bytes, never reads files. It knows nothing of
//! what a record means beyond its header (no block references, no rmgr
//! payloads) and assumes the little-endian, 8-byte-aligned WAL of 64-bit
//! servers.
//!
//! Layout, the same in PostgreSQL 13 to 18 (only the magic changes):
//! a page starts with a 24-byte header (`magic u16, info u16, timeline u32,
//! page address u64, remaining length u32`, 4 bytes padding); the first page
//! of a segment has a 40-byte header that adds `system identifier u64,
//! segment size u32, block size u32`. A record starts at an 8-byte aligned
//! LSN with a 24-byte header (`total length u32, xid u32, previous record
//! u64, info u8, rmgr u8`, 2 bytes padding, `crc u32`); its bytes flow over
//! page headers into the next pages, whose headers then carry the
//! "continues a record" flag and how many bytes of it remain. After an
//! `XLOG_SWITCH` record the rest of the segment is padding: all-zero pages
//! without headers in every supported major (seen on real segments of 13 to
//! 18, recycled ones too). The padding is not checked, as the server never
//! reads it.

use crate::error::{Error, Result};
use crate::pg::lsn::{self, Lsn};
use crate::pg::version::{self, Major};

/// Bytes of a short page header (`SizeOfXLogShortPHD` on 64-bit servers).
pub const SHORT_PAGE_HEADER_LEN: usize = 24;
/// Bytes of the long page header opening a segment (`SizeOfXLogLongPHD`).
pub const LONG_PAGE_HEADER_LEN: usize = 40;
/// Bytes of a record header (`SizeOfXLogRecord`).
pub const RECORD_HEADER_LEN: usize = 24;

/// Page flag: the page starts with the rest of a record begun earlier.
pub const FIRST_IS_CONTRECORD: u16 = 0x0001;
/// Page flag: the long header (first page of a segment).
pub const LONG_HEADER: u16 = 0x0002;
/// Page flag: full-page images on this page may be dropped (no backup was
/// running); irrelevant to reading the WAL.
pub const BKP_REMOVABLE: u16 = 0x0004;
/// Page flag: a record that was being continued here was never finished
/// (the server crashed first); WAL continues over it from this page.
pub const FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const KNOWN_FLAGS: u16 =
    FIRST_IS_CONTRECORD | LONG_HEADER | BKP_REMOVABLE | FIRST_IS_OVERWRITE_CONTRECORD;

/// Where `xl_crc` sits in a record header; the CRC covers the header bytes
/// before it.
const CRC_OFFSET: usize = 20;
/// Records start at multiples of this (MAXALIGN of 64-bit servers).
const RECORD_ALIGN: usize = 8;
/// Longer records are not written by any supported server (16 and later
/// cap them at 1020 MiB); a longer length is not a record header.
const MAX_RECORD_LEN: u32 = 1 << 30;
/// The resource manager of WAL-internal records, and its switch record.
const RMGR_XLOG: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// The fields only the first page of a segment carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader {
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

/// A WAL page header as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    pub magic: u16,
    /// The flags (`xlp_info`).
    pub info: u16,
    pub timeline: u32,
    /// The LSN of the page's first byte (`xlp_pageaddr`).
    pub address: Lsn,
    /// Bytes of a record begun on an earlier page still to come
    /// (`xlp_rem_len`), when [`FIRST_IS_CONTRECORD`] is set.
    pub remaining: u32,
    pub long: Option<LongHeader>,
}

impl PageHeader {
    /// Reads the header at the start of `page`; `None` when `page` is too
    /// short for it. Nothing is validated.
    pub fn parse(page: &[u8]) -> Option<PageHeader> {
        if page.len() < SHORT_PAGE_HEADER_LEN {
            return None;
        }
        let info = u16_at(page, 2);
        let long = if info & LONG_HEADER != 0 {
            if page.len() < LONG_PAGE_HEADER_LEN {
                return None;
            }
            Some(LongHeader {
                system_identifier: u64_at(page, 24),
                segment_size: u32_at(page, 32),
                block_size: u32_at(page, 36),
            })
        } else {
            None
        };
        Some(PageHeader {
            magic: u16_at(page, 0),
            info,
            timeline: u32_at(page, 4),
            address: Lsn(u64_at(page, 8)),
            remaining: u32_at(page, 16),
            long,
        })
    }

    /// Bytes the header takes on its page.
    pub fn size(&self) -> usize {
        if self.long.is_some() {
            LONG_PAGE_HEADER_LEN
        } else {
            SHORT_PAGE_HEADER_LEN
        }
    }

    /// Whether the page starts with the rest of an earlier record.
    pub fn continues_record(&self) -> bool {
        self.info & FIRST_IS_CONTRECORD != 0
    }
}

/// What a segment file name says: `TTTTTTTTXXXXXXXXYYYYYYYY`, maybe with
/// `.partial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SegmentName {
    timeline: u32,
    number: u64,
    partial: bool,
}

impl SegmentName {
    fn parse(name: &str, segment_size: u64) -> Result<SegmentName> {
        let bad = || {
            Error::invalid(format!(
                "{name:?} is not a WAL segment name (24 hex digits, maybe .partial)"
            ))
        };
        let stem = name.strip_suffix(".partial").unwrap_or(name);
        let hex = stem.len() == 24
            && stem
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        if !hex {
            return Err(bad());
        }
        let timeline = u32::from_str_radix(&stem[..8], 16).map_err(|_| bad())?;
        if timeline == 0 {
            return Err(bad());
        }
        Ok(SegmentName {
            timeline,
            number: lsn::segment_number(stem, segment_size)?,
            partial: stem.len() != name.len(),
        })
    }
}

fn check_segment_size(segment_size: u64) -> Result<()> {
    if lsn::valid_segment_size(segment_size) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{segment_size} bytes is not a WAL segment size (a power of two from 1 MiB to 1 GiB)"
        )))
    }
}

/// What the first page of a segment says, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The major that wrote the segment, from the page magic.
    pub major: &'static Major,
    /// The first page's timeline. It may be older than the file name's: a
    /// new timeline's first segment starts with a copy of the old one's WAL.
    pub timeline: u32,
    pub system_identifier: u64,
    pub segment_size: u64,
    pub block_size: u32,
}

/// The major whose WAL pages carry `magic`, or why none does.
fn major_of_magic(name: &str, magic: u16) -> Result<&'static Major> {
    if let Some(major) = version::from_wal_page_magic(magic) {
        return Ok(major);
    }
    let supported = format!(
        "PostgreSQL {} to {}",
        version::SUPPORTED.start(),
        version::SUPPORTED.end()
    );
    if let Some(major) = version::from_wal_page_magic(magic.swap_bytes()) {
        return Err(Error::unsupported(format!(
            "WAL segment {name}: page magic {magic:#06X} is PostgreSQL {}'s byte-swapped: \
             WAL of a big-endian server is not supported",
            major.number
        )));
    }
    // Every PostgreSQL since 8.x has used a magic from 0xD0xx or 0xD1xx.
    if magic & 0xFE00 == 0xD000 {
        return Err(Error::unsupported(format!(
            "WAL segment {name}: page magic {magic:#06X} is not that of {supported}: \
             WAL of another PostgreSQL version"
        )));
    }
    Err(Error::corrupt(format!(
        "WAL segment {name}: page magic {magic:#06X} is not a WAL page magic \
         (not a WAL segment, or damaged)"
    )))
}

fn check_first_page(
    name: &str,
    parsed: SegmentName,
    bytes: &[u8],
    segment_size: u64,
    system_identifier: Option<u64>,
) -> Result<(SegmentHeader, PageHeader)> {
    if bytes.len() < LONG_PAGE_HEADER_LEN {
        return Err(Error::corrupt(format!(
            "WAL segment {name}: {} bytes, too short for the {LONG_PAGE_HEADER_LEN}-byte \
             header of a segment's first page",
            bytes.len()
        )));
    }
    let header = PageHeader::parse(bytes).expect("long enough");
    let corrupt = |what: String| Error::corrupt(format!("WAL segment {name}: {what}"));
    let major = major_of_magic(name, header.magic)?;
    if header.info & !KNOWN_FLAGS != 0 {
        return Err(corrupt(format!(
            "first page has unknown flags {:#06X}",
            header.info
        )));
    }
    let Some(long) = header.long else {
        return Err(corrupt(
            "first page has a short header; a segment starts with a long one".into(),
        ));
    };
    if let Some(expected) = system_identifier
        && long.system_identifier != expected
    {
        return Err(Error::invalid(format!(
            "WAL segment {name}: system identifier {} is not the expected {expected}: \
             WAL of another cluster",
            long.system_identifier
        )));
    }
    if u64::from(long.segment_size) != segment_size {
        return Err(Error::invalid(format!(
            "WAL segment {name}: segment size is {} in its header, but the archive's is {}",
            size_text(long.segment_size.into()),
            size_text(segment_size)
        )));
    }
    let block = u64::from(long.block_size);
    if !block.is_power_of_two()
        || !(1024..=65536).contains(&block)
        || !segment_size.is_multiple_of(block)
    {
        return Err(corrupt(format!(
            "block size {} in its header is not a WAL block size",
            long.block_size
        )));
    }
    let start = Lsn(parsed.number * segment_size);
    if header.address != start {
        return Err(corrupt(format!(
            "first page address is {}, but the name says the segment starts at {start}",
            header.address
        )));
    }
    if header.timeline == 0 || header.timeline > parsed.timeline {
        return Err(corrupt(format!(
            "first page is on timeline {}, but the name says timeline {}",
            header.timeline, parsed.timeline
        )));
    }
    let checked = SegmentHeader {
        major,
        timeline: header.timeline,
        system_identifier: long.system_identifier,
        segment_size,
        block_size: long.block_size,
    };
    Ok((checked, header))
}

/// Checks the first page of segment `name` (at least its first 40 bytes in
/// `bytes`) and says what it found: which major wrote it, its system
/// identifier and segment size. It checks that the magic is that of a
/// supported major, that the page address is where the name puts the
/// segment, that the page's timeline is not after the name's (it may be
/// before: after a promotion, the new timeline's first segment starts with
/// the old timeline's pages), that the segment size is `segment_size`, and,
/// when one is given, the system identifier. Damage is `Corrupt`; WAL of
/// another cluster or segment size `InvalidInput`; WAL of another major
/// `Unsupported`. The file's length is the caller's to check.
pub fn check_header(
    name: &str,
    bytes: &[u8],
    segment_size: u64,
    system_identifier: Option<u64>,
) -> Result<SegmentHeader> {
    check_segment_size(segment_size)?;
    let parsed = SegmentName::parse(name, segment_size)?;
    check_first_page(name, parsed, bytes, segment_size, system_identifier).map(|(h, _)| h)
}

/// A record's header, handed to the visitor of [`WalStream::feed_visiting`]
/// once the whole record has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub lsn: Lsn,
    pub total_len: u32,
    pub xid: u32,
    /// The LSN of the record before it (`xl_prev`).
    pub prev: Lsn,
    pub info: u8,
    pub rmgr: u8,
    /// Whether the stored CRC matches the record's bytes.
    pub crc_matches: bool,
}

impl Record {
    /// Whether this is an `XLOG_SWITCH` record, after which the rest of the
    /// segment is padding.
    pub fn is_switch(&self) -> bool {
        self.rmgr == RMGR_XLOG && self.info & 0xF0 == XLOG_SWITCH
    }
}

/// Something wrong in the WAL: in which segment it was seen and at which
/// LSN (a record's start when it concerns a record, else a page's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment: String,
    pub lsn: Lsn,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WAL segment {} at {}: {}",
            self.segment, self.lsn, self.message
        )
    }
}

/// Where the WAL ends: the first position holding no valid record (zeros,
/// or a record header that is not one), and why it is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalEnd {
    pub lsn: Lsn,
    pub reason: String,
}

/// Segments missing before the one fed: checking started over at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The segment that should have come next.
    pub expected: String,
    /// How many segments are missing (0 when the one fed comes before the
    /// expected one).
    pub missing: u64,
}

/// What feeding one segment to a [`WalStream`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    pub segment: String,
    /// The major that wrote it, when its first page is readable.
    pub major: Option<&'static Major>,
    /// Records that end in this segment, CRC failures included.
    pub records: u64,
    /// Set when this segment does not follow the previous one fed.
    pub gap: Option<Gap>,
    /// The LSN of the `XLOG_SWITCH` record after which the segment is
    /// padding.
    pub switch: Option<Lsn>,
    /// Where the WAL ends in this segment. Expected in a `.partial` segment;
    /// in a complete one it means the rest was never written.
    pub end: Option<WalEnd>,
    /// Records that a crash left unfinished and that the WAL continues over
    /// (flag `FIRST_IS_OVERWRITE_CONTRECORD`); not damage.
    pub overwritten: Vec<Lsn>,
    /// A record that starts here and continues in the next segment.
    pub open_record: Option<Lsn>,
    pub problems: Vec<Problem>,
}

impl SegmentReport {
    fn new(segment: &str) -> SegmentReport {
        SegmentReport {
            segment: segment.to_string(),
            major: None,
            records: 0,
            gap: None,
            switch: None,
            end: None,
            overwritten: Vec::new(),
            open_record: None,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, lsn: Lsn, message: impl Into<String>) {
        self.problems.push(Problem {
            segment: self.segment.clone(),
            lsn,
            message: message.into(),
        });
    }

    /// `Ok` when no problem was found, else a `Corrupt` error listing them.
    pub fn result(&self) -> Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        let all: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
        Err(Error::corrupt(all.join("; ")))
    }
}

/// A record being read: its header as far as it has come, and the CRC of
/// its bytes after the header so far.
#[derive(Debug, Clone, Copy)]
struct OpenRecord {
    lsn: Lsn,
    total: u32,
    have: u32,
    header: [u8; RECORD_HEADER_LEN],
    crc: u32,
}

impl OpenRecord {
    fn new(lsn: Lsn, total: u32) -> OpenRecord {
        OpenRecord {
            lsn,
            total,
            have: 0,
            header: [0; RECORD_HEADER_LEN],
            crc: 0,
        }
    }

    fn missing(&self) -> usize {
        (self.total - self.have) as usize
    }

    /// Takes the next bytes of the record; true when they complete its
    /// header.
    fn absorb(&mut self, mut bytes: &[u8]) -> bool {
        let mut header_done = false;
        let have = self.have as usize;
        if have < RECORD_HEADER_LEN {
            let n = (RECORD_HEADER_LEN - have).min(bytes.len());
            self.header[have..have + n].copy_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.have += n as u32;
            header_done = self.have as usize == RECORD_HEADER_LEN;
        }
        if !bytes.is_empty() {
            self.crc = crc32c::crc32c_append(self.crc, bytes);
            self.have += bytes.len() as u32;
        }
        header_done
    }

    /// The finished record. PostgreSQL's CRC is over the bytes after the
    /// header, then the header up to the CRC field.
    fn finish(&self) -> Record {
        record_of(self.lsn, &self.header, self.crc)
    }
}

/// Where a stream stands between two positions in the WAL.
#[derive(Debug, Clone)]
enum Cursor {
    /// Where the next record starts is unknown (at the start, after a gap
    /// or damage): skip the rest of a continued record, then read.
    Unsynced,
    /// The next byte after the page header, or at the position, starts a
    /// record.
    RecordStart,
    /// In the middle of a record.
    InRecord(OpenRecord),
    /// An `XLOG_SWITCH` record ended the segment's WAL.
    Switched,
    /// The WAL ended at this LSN in this segment.
    Ended(Lsn, String),
}

/// Why the WAL cannot be read on from a position.
struct Stop {
    lsn: Lsn,
    reason: String,
}

/// The WAL of one timeline, fed segment by segment in order and checked as
/// it comes: every page header, and every record's length, back link and
/// CRC. Records spanning segments are carried over; memory use does not
/// depend on record or segment sizes.
#[derive(Debug, Clone)]
pub struct WalStream {
    segment_size: u64,
    system_identifier: Option<u64>,
    major: Option<&'static Major>,
    /// The number of the segment expected next.
    next: Option<u64>,
    cursor: Cursor,
    /// The start of the last record read, which the next must point back to.
    prev_record: Option<Lsn>,
    /// The latest page timeline seen; timelines only go forward.
    timeline: u32,
    records: u64,
}

impl WalStream {
    /// A stream of segments of `segment_size` bytes. The system identifier
    /// is taken from the first segment unless given with
    /// [`WalStream::with_system_identifier`].
    pub fn new(segment_size: u64) -> Result<WalStream> {
        check_segment_size(segment_size)?;
        Ok(WalStream {
            segment_size,
            system_identifier: None,
            major: None,
            next: None,
            cursor: Cursor::Unsynced,
            prev_record: None,
            timeline: 0,
            records: 0,
        })
    }

    /// Segments of another cluster than `system_identifier` are problems.
    pub fn with_system_identifier(mut self, system_identifier: u64) -> WalStream {
        self.system_identifier = Some(system_identifier);
        self
    }

    /// Records read so far, over all segments.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// A record begun in the last segment fed that needs the next one.
    pub fn open_record(&self) -> Option<Lsn> {
        match &self.cursor {
            Cursor::InRecord(r) => Some(r.lsn),
            _ => None,
        }
    }

    /// Checks the next segment, `name` with contents `bytes`.
    pub fn feed(&mut self, name: &str, bytes: &[u8]) -> Result<SegmentReport> {
        self.feed_visiting(name, bytes, |_| {})
    }

    /// Checks the next segment and hands each record read to `visit`, once
    /// the record is complete (a record spanning segments is handed over
    /// while feeding the segment it ends in). Errors only when `name` is not
    /// a segment name; everything wrong with the bytes is in the report.
    pub fn feed_visiting(
        &mut self,
        name: &str,
        bytes: &[u8],
        mut visit: impl FnMut(&Record),
    ) -> Result<SegmentReport> {
        let parsed = SegmentName::parse(name, self.segment_size)?;
        let mut report = SegmentReport::new(name);
        let start = Lsn(parsed.number * self.segment_size);

        match self.next.take() {
            Some(expected) if expected != parsed.number => {
                report.gap = Some(Gap {
                    expected: lsn::segment_name(parsed.timeline, expected, self.segment_size),
                    missing: parsed.number.saturating_sub(expected),
                });
                self.restart();
            }
            Some(_) => {}
            None => self.restart(),
        }
        self.next = Some(parsed.number + 1);

        if bytes.len() as u64 != self.segment_size {
            report.problem(
                start,
                format!(
                    "{} bytes, not a whole segment of {}",
                    bytes.len(),
                    size_text(self.segment_size)
                ),
            );
            self.restart();
            return Ok(report);
        }
        let first = check_first_page(
            name,
            parsed,
            bytes,
            self.segment_size,
            self.system_identifier,
        );
        let (checked, first_header) = match first {
            Ok(found) => found,
            Err(e) => {
                report.problem(start, e.message());
                self.restart();
                return Ok(report);
            }
        };
        report.major = Some(checked.major);
        if let Some(major) = self.major
            && major.number != checked.major.number
        {
            report.problem(
                start,
                format!(
                    "written by PostgreSQL {}, the segments before by PostgreSQL {}",
                    checked.major.number, major.number
                ),
            );
            self.restart();
            return Ok(report);
        }
        self.major = Some(checked.major);
        self.system_identifier = Some(checked.system_identifier);

        match std::mem::replace(&mut self.cursor, Cursor::Unsynced) {
            Cursor::Ended(at, segment) => {
                report.problem(
                    start,
                    format!(
                        "the WAL ended at {at} in segment {segment}, yet this segment continues it"
                    ),
                );
                self.prev_record = None;
            }
            Cursor::Switched => self.cursor = Cursor::RecordStart,
            other => self.cursor = other,
        }

        let walk = Walk {
            bytes,
            start,
            block: checked.block_size as usize,
            magic: checked.major.wal_page_magic,
            name_timeline: parsed.timeline,
        };
        self.walk(&walk, first_header, &mut report, &mut visit);
        if let Cursor::InRecord(r) = &self.cursor {
            report.open_record = Some(r.lsn);
        }
        Ok(report)
    }

    /// Forgets the position: what comes next is read from its first whole
    /// record.
    fn restart(&mut self) {
        self.cursor = Cursor::Unsynced;
        self.prev_record = None;
        self.timeline = 0;
    }

    fn walk(
        &mut self,
        w: &Walk<'_>,
        first_header: PageHeader,
        report: &mut SegmentReport,
        visit: &mut impl FnMut(&Record),
    ) {
        let pages = w.bytes.len() / w.block;
        let mut index = 0;
        let mut header = Some(first_header);
        while index < pages {
            let page_lsn = w.page_lsn(index);
            let page = w.page(index);
            let page_header = match header.take() {
                Some(h) => h,
                None => match w.check_page(index) {
                    Ok(h) => h,
                    Err(reason) => {
                        let at = match &self.cursor {
                            Cursor::InRecord(r) => r.lsn,
                            _ => page_lsn,
                        };
                        let stop = Stop {
                            lsn: at,
                            reason: format!("page at {page_lsn}: {reason}"),
                        };
                        match self.stop(w, index, stop, report) {
                            Some(resume) => {
                                index = resume;
                                continue;
                            }
                            None => return,
                        }
                    }
                },
            };
            if page_header.timeline < self.timeline {
                report.problem(
                    page_lsn,
                    format!(
                        "page is on timeline {} after a page on timeline {}",
                        page_header.timeline, self.timeline
                    ),
                );
            }
            self.timeline = self.timeline.max(page_header.timeline);

            let mut pos = page_header.size();
            self.enter_page(&page_header, page_lsn, report);
            if let Cursor::Unsynced = self.cursor {
                if page_header.continues_record() {
                    let rest = page_header.remaining as usize;
                    if rest >= w.block - pos {
                        index += 1;
                        continue;
                    }
                    pos = align(pos + rest);
                }
                self.cursor = Cursor::RecordStart;
            }
            match self.read_records(page, page_lsn, pos, report, visit) {
                Ok(()) => {}
                Err(stop) => match self.stop(w, index, stop, report) {
                    Some(resume) => {
                        index = resume;
                        continue;
                    }
                    None => return,
                },
            }
            if let Cursor::Switched = self.cursor {
                return;
            }
            index += 1;
        }
    }

    /// Sets the cursor for a page whose header is valid, from what the page
    /// says about a record continued from before.
    fn enter_page(&mut self, header: &PageHeader, page_lsn: Lsn, report: &mut SegmentReport) {
        match &self.cursor {
            Cursor::InRecord(r) => {
                let r = *r;
                if !header.continues_record() {
                    if header.info & FIRST_IS_OVERWRITE_CONTRECORD != 0 {
                        report.overwritten.push(r.lsn);
                    } else {
                        report.problem(
                            r.lsn,
                            format!(
                                "record of {} bytes lacks its last {}: the page at {page_lsn} \
                                 does not continue it",
                                r.total,
                                r.missing()
                            ),
                        );
                    }
                    // The back link of the record after an unfinished one
                    // is not checked.
                    self.prev_record = None;
                    self.cursor = Cursor::RecordStart;
                } else if header.remaining as usize != r.missing() {
                    report.problem(
                        r.lsn,
                        format!(
                            "record of {} bytes has {} left, but the page at {page_lsn} \
                             says {} remain",
                            r.total,
                            r.missing(),
                            header.remaining
                        ),
                    );
                    self.prev_record = None;
                    self.cursor = Cursor::Unsynced;
                }
            }
            Cursor::RecordStart if header.continues_record() => {
                report.problem(
                    page_lsn,
                    format!(
                        "page says {} bytes of a record continue on it, but no record is open",
                        header.remaining
                    ),
                );
                self.prev_record = None;
                self.cursor = Cursor::Unsynced;
            }
            _ => {}
        }
    }

    /// Reads the records of one page from `pos`, whose header is valid and
    /// the cursor set for it.
    fn read_records(
        &mut self,
        page: &[u8],
        page_lsn: Lsn,
        mut pos: usize,
        report: &mut SegmentReport,
        visit: &mut impl FnMut(&Record),
    ) -> std::result::Result<(), Stop> {
        let block = page.len();
        while pos < block {
            let done = match &self.cursor {
                Cursor::RecordStart => {
                    let lsn = Lsn(page_lsn.0 + pos as u64);
                    let total = u32_at(page, pos);
                    if total == 0 {
                        return Err(Stop {
                            lsn,
                            reason: "zeros where the next record would start".into(),
                        });
                    }
                    if (total as usize) < RECORD_HEADER_LEN || total > MAX_RECORD_LEN {
                        return Err(Stop {
                            lsn,
                            reason: format!("{total} is not a record length"),
                        });
                    }
                    let end = pos + total as usize;
                    if end <= block {
                        // The common case: the whole record is on this page
                        // and is checked where it lies.
                        let bytes = &page[pos..end];
                        check_back_link(self.prev_record, lsn, &bytes[..RECORD_HEADER_LEN])?;
                        pos = end;
                        let data_crc = crc32c::crc32c(&bytes[RECORD_HEADER_LEN..]);
                        record_of(lsn, &bytes[..RECORD_HEADER_LEN], data_crc)
                    } else {
                        let mut open = OpenRecord::new(lsn, total);
                        pos = absorb(&mut open, self.prev_record, page, pos)?;
                        self.cursor = Cursor::InRecord(open);
                        continue;
                    }
                }
                Cursor::InRecord(r) => {
                    let mut open = *r;
                    pos = absorb(&mut open, self.prev_record, page, pos)?;
                    if open.missing() > 0 {
                        self.cursor = Cursor::InRecord(open);
                        continue;
                    }
                    open.finish()
                }
                _ => return Ok(()),
            };
            if self.complete(done, report, visit) {
                return Ok(());
            }
            pos = align(pos);
        }
        Ok(())
    }

    /// Takes note of a record read to its end; true when it was a switch,
    /// after which the segment holds no more WAL.
    fn complete(
        &mut self,
        done: Record,
        report: &mut SegmentReport,
        visit: &mut impl FnMut(&Record),
    ) -> bool {
        visit(&done);
        self.records += 1;
        report.records += 1;
        self.prev_record = Some(done.lsn);
        self.cursor = Cursor::RecordStart;
        if !done.crc_matches {
            report.problem(
                done.lsn,
                format!(
                    "record CRC does not match its bytes (record of {} bytes, rmgr {}, info {:#04X})",
                    done.total_len, done.rmgr, done.info
                ),
            );
        } else if done.is_switch() {
            report.switch = Some(done.lsn);
            self.cursor = Cursor::Switched;
            return true;
        }
        false
    }

    /// The WAL cannot be read on from `stop` (found on page `index`). If a
    /// later page of the segment is a valid WAL page, the WAL did not end
    /// here: a problem, and reading resumes there (the page index is
    /// returned). Otherwise this is where the WAL ends.
    fn stop(
        &mut self,
        w: &Walk<'_>,
        index: usize,
        stop: Stop,
        report: &mut SegmentReport,
    ) -> Option<usize> {
        let pages = w.bytes.len() / w.block;
        self.prev_record = None;
        if let Some(resume) = (index + 1..pages).find(|&i| w.check_page(i).is_ok()) {
            report.problem(
                stop.lsn,
                format!(
                    "WAL is unreadable here ({}), yet valid pages follow from {}",
                    stop.reason,
                    w.page_lsn(resume)
                ),
            );
            self.cursor = Cursor::Unsynced;
            return Some(resume);
        }
        report.end = Some(WalEnd {
            lsn: stop.lsn,
            reason: stop.reason,
        });
        self.cursor = Cursor::Ended(stop.lsn, report.segment.clone());
        None
    }
}

/// One segment being walked.
struct Walk<'a> {
    bytes: &'a [u8],
    start: Lsn,
    block: usize,
    magic: u16,
    name_timeline: u32,
}

impl Walk<'_> {
    fn page(&self, index: usize) -> &[u8] {
        &self.bytes[index * self.block..(index + 1) * self.block]
    }

    fn page_lsn(&self, index: usize) -> Lsn {
        Lsn(self.start.0 + (index * self.block) as u64)
    }

    /// The header of page `index` (not the first), or why it is not a valid
    /// header for that page.
    fn check_page(&self, index: usize) -> std::result::Result<PageHeader, String> {
        let page = self.page(index);
        let h = PageHeader::parse(page).expect("a page is longer than its header");
        if h.magic != self.magic {
            return Err(if page[..SHORT_PAGE_HEADER_LEN].iter().all(|&b| b == 0) {
                "zeros, no page header".to_string()
            } else {
                format!("magic {:#06X}, expected {:#06X}", h.magic, self.magic)
            });
        }
        if h.info & !KNOWN_FLAGS != 0 || h.long.is_some() {
            return Err(format!("unexpected page flags {:#06X}", h.info));
        }
        let expected = self.page_lsn(index);
        if h.address != expected {
            return Err(format!("page address is {}", h.address));
        }
        if h.timeline == 0 || h.timeline > self.name_timeline {
            return Err(format!(
                "timeline {} in a segment of timeline {}",
                h.timeline, self.name_timeline
            ));
        }
        Ok(h)
    }
}

fn align(pos: usize) -> usize {
    pos.next_multiple_of(RECORD_ALIGN)
}

/// A record from its header and the CRC of the bytes after it.
fn record_of(lsn: Lsn, header: &[u8], data_crc: u32) -> Record {
    let computed = crc32c::crc32c_append(data_crc, &header[..CRC_OFFSET]);
    Record {
        lsn,
        total_len: u32_at(header, 0),
        xid: u32_at(header, 4),
        prev: Lsn(u64_at(header, 8)),
        info: header[16],
        rmgr: header[17],
        crc_matches: computed == u32_at(header, CRC_OFFSET),
    }
}

/// A record's header must point back to the record before it, when that
/// one is known; anything else is not a record that follows it (PostgreSQL
/// stops reading there too).
fn check_back_link(
    prev_record: Option<Lsn>,
    lsn: Lsn,
    header: &[u8],
) -> std::result::Result<(), Stop> {
    let prev = Lsn(u64_at(header, 8));
    match prev_record {
        Some(expected) if prev != expected => Err(Stop {
            lsn,
            reason: format!("record header points back to {prev}, not to the record at {expected}"),
        }),
        _ => Ok(()),
    }
}

/// Feeds the bytes of `open` that are on `page` from `pos`; returns the
/// position after them.
fn absorb(
    open: &mut OpenRecord,
    prev_record: Option<Lsn>,
    page: &[u8],
    pos: usize,
) -> std::result::Result<usize, Stop> {
    let n = open.missing().min(page.len() - pos);
    if open.absorb(&page[pos..pos + n]) {
        check_back_link(prev_record, open.lsn, &open.header)?;
    }
    Ok(pos + n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    const SEG: u64 = 1 << 20;
    const BLOCK: usize = 8192;
    const SYSID: u64 = 7714454739846705862;
    const MAGIC_17: u16 = 0xD116;

    /// Writes WAL the way a server lays it out, from a segment boundary.
    struct Writer {
        base: u64,
        buf: Vec<u8>,
        timeline: u32,
        system_identifier: u64,
        magic: u16,
        prev: u64,
        next_page_flags: u16,
    }

    impl Writer {
        fn new(first_segment: u64) -> Writer {
            Writer {
                base: first_segment * SEG,
                buf: Vec::new(),
                timeline: 1,
                system_identifier: SYSID,
                magic: MAGIC_17,
                prev: 0,
                next_page_flags: 0,
            }
        }

        fn lsn(&self) -> u64 {
            self.base + self.buf.len() as u64
        }

        /// Writes a page header if at a page boundary; `rest` is what is
        /// left of a record continued onto the page.
        fn page_header(&mut self, rest: u32) {
            let at = self.lsn();
            if !at.is_multiple_of(BLOCK as u64) {
                return;
            }
            let long = at.is_multiple_of(SEG);
            let mut info = BKP_REMOVABLE | std::mem::take(&mut self.next_page_flags);
            if long {
                info |= LONG_HEADER;
            }
            if rest > 0 {
                info |= FIRST_IS_CONTRECORD;
            }
            let mut h = Vec::new();
            h.extend_from_slice(&self.magic.to_le_bytes());
            h.extend_from_slice(&info.to_le_bytes());
            h.extend_from_slice(&self.timeline.to_le_bytes());
            h.extend_from_slice(&at.to_le_bytes());
            h.extend_from_slice(&rest.to_le_bytes());
            h.extend_from_slice(&[0; 4]);
            if long {
                h.extend_from_slice(&self.system_identifier.to_le_bytes());
                h.extend_from_slice(&(SEG as u32).to_le_bytes());
                h.extend_from_slice(&(BLOCK as u32).to_le_bytes());
            }
            self.buf.extend_from_slice(&h);
        }

        fn record_bytes(&self, rmgr: u8, info: u8, payload: &[u8]) -> Vec<u8> {
            let total = (RECORD_HEADER_LEN + payload.len()) as u32;
            let mut r = Vec::new();
            r.extend_from_slice(&total.to_le_bytes());
            r.extend_from_slice(&77u32.to_le_bytes());
            r.extend_from_slice(&self.prev.to_le_bytes());
            r.extend_from_slice(&[info, rmgr, 0, 0]);
            let crc = crc32c::crc32c_append(crc32c::crc32c(payload), &r[..CRC_OFFSET]);
            r.extend_from_slice(&crc.to_le_bytes());
            r.extend_from_slice(payload);
            r
        }

        /// Writes `bytes` of a record, page headers in between; stops
        /// early at `limit` bytes.
        fn put(&mut self, bytes: &[u8], limit: usize) {
            let mut done = 0;
            while done < bytes.len().min(limit) {
                self.page_header((bytes.len() - done) as u32 * u32::from(done > 0));
                let room = BLOCK - (self.lsn() % BLOCK as u64) as usize;
                let n = room.min(bytes.len() - done).min(limit - done);
                self.buf.extend_from_slice(&bytes[done..done + n]);
                done += n;
            }
        }

        fn pad(&mut self) {
            while !self.buf.len().is_multiple_of(RECORD_ALIGN) {
                self.buf.push(0);
            }
        }

        fn record(&mut self, rmgr: u8, info: u8, payload: &[u8]) -> u64 {
            self.pad();
            self.page_header(0);
            let start = self.lsn();
            let bytes = self.record_bytes(rmgr, info, payload);
            self.put(&bytes, usize::MAX);
            self.prev = start;
            start
        }

        fn data(&mut self, len: usize) -> u64 {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            self.record(10, 0x00, &payload)
        }

        fn switch(&mut self) -> u64 {
            let at = self.record(RMGR_XLOG, XLOG_SWITCH, &[]);
            let end = self.lsn().next_multiple_of(SEG);
            self.buf.resize((end - self.base) as usize, 0);
            at
        }

        /// Writes only the part of a record that fits on this page, as a
        /// crash would leave it, and marks the next page as written over it.
        fn unfinished(&mut self, len: usize) -> u64 {
            self.pad();
            self.page_header(0);
            let start = self.lsn();
            let room = BLOCK - (start % BLOCK as u64) as usize;
            assert!(len + RECORD_HEADER_LEN > room);
            let bytes = self.record_bytes(10, 0, &vec![5; len]);
            self.put(&bytes, room);
            self.next_page_flags = FIRST_IS_OVERWRITE_CONTRECORD;
            start
        }

        /// The segments written so far, the last padded with zeros.
        fn segments(&self) -> Vec<(String, Vec<u8>)> {
            let mut all = self.buf.clone();
            all.resize(all.len().next_multiple_of(SEG as usize), 0);
            all.chunks(SEG as usize)
                .enumerate()
                .map(|(i, s)| {
                    let number = self.base / SEG + i as u64;
                    (lsn::segment_name(self.timeline, number, SEG), s.to_vec())
                })
                .collect()
        }
    }

    fn feed_all(stream: &mut WalStream, segments: &[(String, Vec<u8>)]) -> Vec<SegmentReport> {
        segments
            .iter()
            .map(|(name, bytes)| stream.feed(name, bytes).unwrap())
            .collect()
    }

    /// Records of many sizes: some span pages, one spans a segment, some
    /// split their header over a page boundary.
    fn busy_wal(first_segment: u64) -> (Writer, Vec<u64>) {
        let mut w = Writer::new(first_segment);
        let mut starts = Vec::new();
        for i in 0..1000 {
            starts.push(w.data([10, 50, 200, 3000, 8200, 20000][i % 6]));
        }
        (w, starts)
    }

    fn offset_of(segments: &[(String, Vec<u8>)], lsn: u64) -> (usize, usize) {
        let first = lsn::segment_number(&segments[0].0, SEG).unwrap();
        ((lsn / SEG - first) as usize, (lsn % SEG) as usize)
    }

    #[test]
    fn parses_page_headers() {
        let (w, _) = busy_wal(3);
        let segs = w.segments();
        let long = PageHeader::parse(&segs[0].1).unwrap();
        assert_eq!(long.magic, MAGIC_17);
        assert_eq!(long.address, Lsn(3 * SEG));
        assert_eq!(long.size(), LONG_PAGE_HEADER_LEN);
        assert_eq!(
            long.long,
            Some(LongHeader {
                system_identifier: SYSID,
                segment_size: SEG as u32,
                block_size: BLOCK as u32
            })
        );
        let short = PageHeader::parse(&segs[0].1[BLOCK..]).unwrap();
        assert_eq!(short.size(), SHORT_PAGE_HEADER_LEN);
        assert_eq!(short.address, Lsn(3 * SEG + BLOCK as u64));
        assert!(PageHeader::parse(&[0; 10]).is_none());
        let mut cut = segs[0].1[..30].to_vec();
        cut[2] = LONG_HEADER as u8;
        assert!(PageHeader::parse(&cut).is_none());
    }

    #[test]
    fn reads_records_across_pages_and_segments() {
        let (w, starts) = busy_wal(3);
        let segs = w.segments();
        assert!(segs.len() >= 3);
        let mut stream = WalStream::new(SEG).unwrap();
        let mut seen = Vec::new();
        for (name, bytes) in &segs {
            let report = stream
                .feed_visiting(name, bytes, |r| {
                    assert!(r.crc_matches);
                    seen.push(r.lsn.0)
                })
                .unwrap();
            assert_eq!(report.problems, [], "{name}");
            assert_eq!(report.major.unwrap().number, 17);
        }
        assert_eq!(seen, starts);
        assert_eq!(stream.records(), starts.len() as u64);
        // The last segment ends in zeros right after the last record.
        let last = stream.feed_visiting("x", &[], |_| {});
        assert!(last.is_err(), "not a segment name");
    }

    #[test]
    fn says_where_the_wal_ends() {
        let (w, _) = busy_wal(3);
        let end = w.lsn().next_multiple_of(8);
        let segs = w.segments();
        let mut stream = WalStream::new(SEG).unwrap();
        let reports = feed_all(&mut stream, &segs);
        let last = reports.last().unwrap();
        assert_eq!(last.problems, []);
        let wal_end = last.end.clone().unwrap();
        assert_eq!(wal_end.lsn, Lsn(end));
        assert!(wal_end.reason.contains("zeros"), "{}", wal_end.reason);
        assert!(reports[..reports.len() - 1].iter().all(|r| r.end.is_none()));
        // As a .partial, the same.
        let (name, bytes) = segs.last().unwrap();
        let mut again = WalStream::new(SEG).unwrap();
        let r = again.feed(&format!("{name}.partial"), bytes).unwrap();
        assert_eq!(r.end.unwrap().lsn, Lsn(end));
    }

    #[test]
    fn a_record_continues_into_the_next_segment() {
        let mut w = Writer::new(5);
        while w.lsn() + 30_000 < 6 * SEG {
            w.data(3000);
        }
        let spanning = w.data(40_000);
        assert!(spanning < 6 * SEG && w.lsn() > 6 * SEG);
        let after = w.data(100);
        let segs = w.segments();
        let mut stream = WalStream::new(SEG).unwrap();
        let first = stream.feed(&segs[0].0, &segs[0].1).unwrap();
        assert_eq!(first.open_record, Some(Lsn(spanning)));
        assert_eq!(stream.open_record(), Some(Lsn(spanning)));
        let mut seen = Vec::new();
        let second = stream
            .feed_visiting(&segs[1].0, &segs[1].1, |r| seen.push(r.lsn.0))
            .unwrap();
        assert_eq!(second.problems, []);
        assert_eq!(seen, [spanning, after]);
    }

    #[test]
    fn the_rest_of_a_segment_after_a_switch_is_padding() {
        let mut w = Writer::new(7);
        w.data(100);
        let switch = w.switch();
        let next = w.data(100);
        assert_eq!(next, 8 * SEG + LONG_PAGE_HEADER_LEN as u64);
        let segs = w.segments();
        let mut stream = WalStream::new(SEG).unwrap();
        let reports = feed_all(&mut stream, &segs);
        assert_eq!(reports[0].switch, Some(Lsn(switch)));
        assert_eq!(reports[0].end, None);
        assert_eq!(reports[0].problems, []);
        assert_eq!(reports[1].problems, []);
        assert_eq!(reports[1].records, 1);
    }

    #[test]
    fn a_flipped_byte_is_named_by_its_record() {
        let (w, starts) = busy_wal(3);
        let mut segs = w.segments();
        // A record in the second segment that spans pages.
        let victim = starts
            .windows(2)
            .find(|w| {
                let at = w[0] % BLOCK as u64;
                w[0] > 4 * SEG && (4000..8000).contains(&at) && w[1] - w[0] > 8192
            })
            .unwrap()[0];
        let (seg, off) = offset_of(&segs, victim + 100);
        segs[seg].1[off] ^= 0x20;
        let mut stream = WalStream::new(SEG).unwrap();
        let reports = feed_all(&mut stream, &segs);
        let problems: Vec<&Problem> = reports.iter().flat_map(|r| &r.problems).collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].lsn, Lsn(victim));
        assert_eq!(problems[0].segment, segs[seg].0);
        assert!(problems[0].message.contains("CRC"), "{}", problems[0]);
        assert_eq!(stream.records(), starts.len() as u64, "reading went on");
        let err = reports[seg].result().unwrap_err();
        assert_eq!(err.kind(), Kind::Corrupt);
        assert!(err.message().contains(&Lsn(victim).to_string()), "{err}");
    }

    #[test]
    fn a_flipped_byte_in_a_record_header_is_caught() {
        let (w, starts) = busy_wal(3);
        let mut segs = w.segments();
        // The xid of a record well inside a page: only the CRC sees it.
        let victim = *starts
            .iter()
            .find(|&&s| s > 3 * SEG + 20_000 && (s % BLOCK as u64) < 4000)
            .unwrap();
        let (seg, off) = offset_of(&segs, victim + 4);
        segs[seg].1[off] ^= 1;
        let mut stream = WalStream::new(SEG).unwrap();
        let problems: Vec<Problem> = feed_all(&mut stream, &segs)
            .into_iter()
            .flat_map(|r| r.problems)
            .collect();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].lsn, Lsn(victim));

        // Its back link: the WAL cannot be followed there, but goes on on
        // the next page.
        let mut segs = w.segments();
        let (seg, off) = offset_of(&segs, victim + 8);
        segs[seg].1[off] ^= 1;
        let mut stream = WalStream::new(SEG).unwrap();
        let problems: Vec<Problem> = feed_all(&mut stream, &segs)
            .into_iter()
            .flat_map(|r| r.problems)
            .collect();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].lsn, Lsn(victim));
        assert!(
            problems[0].message.contains("points back"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn zeroed_pages_inside_a_segment_are_not_its_end() {
        let (w, _) = busy_wal(3);
        let mut segs = w.segments();
        let at = 20 * BLOCK;
        segs[0].1[at..at + 2 * BLOCK].fill(0);
        let mut stream = WalStream::new(SEG).unwrap();
        let reports = feed_all(&mut stream, &segs);
        assert_eq!(reports[0].end, None);
        assert_eq!(reports[0].problems.len(), 1, "{:?}", reports[0].problems);
        assert!(
            reports[0].problems[0]
                .message
                .contains("valid pages follow"),
            "{}",
            reports[0].problems[0]
        );
        assert!(reports[1..].iter().all(|r| r.problems.is_empty()));
    }

    #[test]
    fn wal_resuming_after_its_end_is_a_problem() {
        let (w, _) = busy_wal(3);
        let mut segs = w.segments();
        // Zero the end of the first segment: its WAL ends there, but the
        // next segment goes on.
        segs[0].1[SEG as usize - 3 * BLOCK..].fill(0);
        let mut stream = WalStream::new(SEG).unwrap();
        let reports = feed_all(&mut stream, &segs);
        assert!(reports[0].end.is_some());
        assert_eq!(reports[1].problems.len(), 1);
        assert!(reports[1].problems[0].message.contains("the WAL ended at"));
        assert!(reports[2..].iter().all(|r| r.problems.is_empty()));
    }

    #[test]
    fn a_gap_restarts_the_checks() {
        let (w, _) = busy_wal(3);
        let segs = w.segments();
        assert!(segs.len() >= 4);
        let mut stream = WalStream::new(SEG).unwrap();
        stream.feed(&segs[0].0, &segs[0].1).unwrap();
        let after = stream.feed(&segs[2].0, &segs[2].1).unwrap();
        assert_eq!(
            after.gap,
            Some(Gap {
                expected: segs[1].0.clone(),
                missing: 1
            })
        );
        assert_eq!(after.problems, [], "the record cut by the gap is skipped");
        assert!(after.records > 0);
        let next = stream.feed(&segs[3].0, &segs[3].1).unwrap();
        assert_eq!(next.gap, None);
        assert_eq!(next.problems, []);
    }

    #[test]
    fn an_unfinished_record_overwritten_after_a_crash_is_not_damage() {
        let mut w = Writer::new(2);
        w.data(3000);
        w.data(3000);
        let before = w.prev;
        let lost = w.unfinished(6000);
        // The server starts over on the next page, pointing back past the
        // lost record.
        w.prev = before;
        let next = w.data(100);
        assert_eq!(next % BLOCK as u64, SHORT_PAGE_HEADER_LEN as u64);
        w.data(100);
        let segs = w.segments();
        let mut stream = WalStream::new(SEG).unwrap();
        let r = stream.feed(&segs[0].0, &segs[0].1).unwrap();
        assert_eq!(r.problems, []);
        assert_eq!(r.overwritten, [Lsn(lost)]);
        assert_eq!(r.records, 4);
    }

    #[test]
    fn check_header_reads_the_first_page() {
        let (w, _) = busy_wal(3);
        let segs = w.segments();
        let (name, bytes) = &segs[1];
        let h = check_header(name, &bytes[..BLOCK], SEG, Some(SYSID)).unwrap();
        assert_eq!(h.major.number, 17);
        assert_eq!(h.system_identifier, SYSID);
        assert_eq!(h.segment_size, SEG);
        assert_eq!(h.timeline, 1);
        assert!(check_header(name, bytes, SEG, None).is_ok());
        let partial = format!("{name}.partial");
        assert!(check_header(&partial, bytes, SEG, None).is_ok());
        let e = check_header("00000001000000000000000", bytes, SEG, None).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        let e = check_header(name, &bytes[..30], SEG, None).unwrap_err();
        assert_eq!(e.kind(), Kind::Corrupt);
    }

    fn header_error(bytes: &[u8], name: &str, sysid: Option<u64>) -> Error {
        let e = check_header(name, bytes, SEG, sysid).unwrap_err();
        assert!(e.message().contains(name), "{e}");
        e
    }

    #[test]
    fn check_header_refuses_bad_magic() {
        let (w, _) = busy_wal(3);
        let (name, mut bytes) = w.segments().remove(0);
        bytes[..2].copy_from_slice(&[0x42, 0x42]);
        let e = header_error(&bytes, &name, None);
        assert_eq!(e.kind(), Kind::Corrupt);
        assert!(e.message().contains("magic"), "{e}");
        bytes[..2].copy_from_slice(&0xD101u16.to_le_bytes());
        let e = header_error(&bytes, &name, None);
        assert_eq!(e.kind(), Kind::Unsupported);
        assert!(e.message().contains("0xD101"), "{e}");
        bytes[..2].copy_from_slice(&MAGIC_17.to_be_bytes());
        let e = header_error(&bytes, &name, None);
        assert_eq!(e.kind(), Kind::Unsupported);
        assert!(e.message().contains("big-endian"), "{e}");
        // Each supported magic is known.
        for major in version::majors() {
            bytes[..2].copy_from_slice(&major.wal_page_magic.to_le_bytes());
            assert_eq!(check_header(&name, &bytes, SEG, None).unwrap().major, major);
        }
        // The stream reports it as a problem of that segment.
        bytes[..2].copy_from_slice(&[0x42, 0x42]);
        let mut stream = WalStream::new(SEG).unwrap();
        let r = stream.feed(&name, &bytes).unwrap();
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].lsn, Lsn(3 * SEG));
    }

    #[test]
    fn check_header_refuses_a_wrong_page_address() {
        let (w, _) = busy_wal(3);
        let segs = w.segments();
        // The bytes of segment 4 under the name of segment 3.
        let e = header_error(&segs[1].1, &segs[0].0, None);
        assert_eq!(e.kind(), Kind::Corrupt);
        assert!(
            e.message().contains("first page address is 0/400000"),
            "{e}"
        );
        assert!(e.message().contains("starts at 0/300000"), "{e}");
    }

    #[test]
    fn check_header_refuses_another_clusters_wal() {
        let (w, _) = busy_wal(3);
        let (name, bytes) = w.segments().remove(0);
        let e = header_error(&bytes, &name, Some(SYSID + 1));
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(e.message().contains("system identifier"), "{e}");
        assert!(e.message().contains(&SYSID.to_string()), "{e}");
        let mut stream = WalStream::new(SEG)
            .unwrap()
            .with_system_identifier(SYSID + 1);
        let r = stream.feed(&name, &bytes).unwrap();
        assert!(r.problems[0].message.contains("system identifier"));
        // A segment size other than the archive's.
        let e = check_header(&name, &bytes, 16 << 20, None).unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(e.message().contains("segment size is 1 MiB"), "{e}");
        assert!(e.message().contains("16 MiB"), "{e}");
    }

    #[test]
    fn check_header_allows_an_older_timeline_not_a_newer_one() {
        let mut w = Writer::new(3);
        w.timeline = 2;
        w.data(100);
        let segs = w.segments();
        let (name, bytes) = &segs[0];
        assert!(name.starts_with("00000002"));
        // Pages of timeline 2 under a timeline 1 name.
        let on_one = format!("00000001{}", &name[8..]);
        let e = header_error(bytes, &on_one, None);
        assert_eq!(e.kind(), Kind::Corrupt);
        assert!(e.message().contains("timeline 2"), "{e}");
        // Under a timeline 3 name, as after a promotion: fine.
        let on_three = format!("00000003{}", &name[8..]);
        assert_eq!(
            check_header(&on_three, bytes, SEG, None).unwrap().timeline,
            2
        );
    }

    #[test]
    fn a_new_timeline_segment_starts_with_old_timeline_pages() {
        let mut w = Writer::new(9);
        for _ in 0..20 {
            w.data(3000);
        }
        w.timeline = 2;
        for _ in 0..20 {
            w.data(3000);
        }
        let segs = w.segments();
        assert_eq!(segs.len(), 1);
        let mut stream = WalStream::new(SEG).unwrap();
        let r = stream.feed(&segs[0].0, &segs[0].1).unwrap();
        assert_eq!(r.problems, []);
        assert_eq!(r.records, 40);
        // Going back to timeline 1 after timeline 2 pages is not.
        let mut bytes = segs[0].1.clone();
        let late = 12 * BLOCK;
        assert_eq!(u32_at(&bytes, late + 4), 2);
        bytes[late + 4..late + 8].copy_from_slice(&1u32.to_le_bytes());
        let mut stream = WalStream::new(SEG).unwrap();
        let r = stream.feed(&segs[0].0, &bytes).unwrap();
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].message.contains("timeline 1 after"));
    }

    #[test]
    fn a_short_segment_is_a_problem() {
        let (w, _) = busy_wal(3);
        let segs = w.segments();
        let mut stream = WalStream::new(SEG).unwrap();
        let r = stream.feed(&segs[0].0, &segs[0].1[..BLOCK]).unwrap();
        assert!(r.problems[0].message.contains("not a whole segment"));
        let r = stream.feed(&segs[1].0, &segs[1].1).unwrap();
        assert_eq!(r.problems, []);
        assert!(WalStream::new(3 << 20).is_err());
    }
}
