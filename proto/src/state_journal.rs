//! The pod record's durable form, one definition for its writer (the pod's shim) and its
//! readers (that shim after a restart, the front's index and lists): a base file,
//! `layout::STATE_FILE`, replaced atomically, and beside it a journal, `layout::JOURNAL_FILE`,
//! that holds each newer record as a frame written into space the file already has.
//!
//! Why a journal: a save of the whole file costs a file fsync, a rename and a directory fsync,
//! and under disk contention each of those waits for the filesystem's own journal. A frame
//! written in place costs one `fdatasync` of data blocks the file already owns (its size and
//! extents never change, so the filesystem has no metadata to commit). When the journal is
//! full, or at a shim's first save, the record is compacted: the base replaced with it, then
//! the old journal unlinked. A fresh, zero-filled journal is renamed into place when the
//! writer has no save waiting (`prepare`), so no call waits for its making.
//!
//! A pod's first record (no base, no journal yet) is renamed into place unflushed, like a
//! frame, and flushed by `sync`: there is no older record on the disk for a crash to take
//! with it. Its caller (RunPodSandbox's create intent) hands Docker its work once the record
//! is written and waits for the flush only before it answers, so the flush runs beside
//! Docker's create instead of before it.
//!
//! What a reader gets is the last whole frame of the journal, else the base. This holds across
//! a crash at any point:
//! - a frame torn by a crash fails its checksum (or its length runs past the data), so the
//!   reader stops before it: that save was never acknowledged, and the frame before it (or the
//!   base) is the last one that was;
//! - a compaction writes the base first (durably) and unlinks the old journal only after:
//!   between the two, the old journal's last frame is the save before the one being made,
//!   which was not yet acknowledged;
//! - a fresh journal holds no frame until the base it was made after is the newest record;
//! - a first record cut before its flush may leave the base empty (renamed in, its data not
//!   yet written back): an empty base reads as no record, which is what the disk held before.
//!
//! A reader opens the journal before it reads the base, and a journal file is never written
//! again once a compaction unlinked it: a reader that opened the old one still reads every
//! frame that was there when it opened it, and one that opened a fresh one reads a base at
//! least as new as that journal's start.
//!
//! Frame: magic `DPJ1`, payload length (u32, little endian), CRC-32 of length and payload
//! (u32, little endian), payload (the record's JSON). The zeros after the last frame fail the
//! magic.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::files::{atomic_write, replace_for_flush, Replaced};
use crate::layout::{JOURNAL_FILE, STATE_FILE};

const MAGIC: [u8; 4] = *b"DPJ1";
const HEADER: usize = 12;
/// The journal's size: a pod's record is 2 to 10 KiB, so a compaction comes every few dozen
/// saves, and a list that reads the journal reads at most this much.
pub const CAPACITY: usize = 64 * 1024;

/// `payload` as one frame.
pub fn frame(payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

fn checksum(len: u32, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The payload of the last whole frame of `journal`, and where the frames end; `None` when
/// the journal starts with no whole frame.
pub fn last_frame(journal: &[u8]) -> (Option<&[u8]>, usize) {
    let mut rest = journal;
    let mut last = None;
    while let Some((header, body)) = rest.split_first_chunk::<HEADER>() {
        let [m0, m1, m2, m3, l0, l1, l2, l3, c0, c1, c2, c3] = *header;
        if [m0, m1, m2, m3] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes([l0, l1, l2, l3]);
        let Some((payload, after)) = usize::try_from(len)
            .ok()
            .and_then(|n| body.split_at_checked(n))
        else {
            break;
        };
        if checksum(len, payload) != u32::from_le_bytes([c0, c1, c2, c3]) {
            break;
        }
        last = Some(payload);
        rest = after;
    }
    (last, journal.len() - rest.len())
}

/// The record's bytes as the pod's directory `dir` holds them now: the journal's last frame,
/// else the base; `None` when neither holds a record (a pod never saved).
pub fn read(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    // Opened before the base is read: see the module's doc.
    let journal = match File::open(dir.join(JOURNAL_FILE)) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let base = match fs::read(dir.join(STATE_FILE)) {
        // A first record whose flush a crash of the machine cut (see the module's doc).
        Ok(bytes) if bytes.is_empty() => None,
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if let Some(mut journal) = journal {
        let mut bytes = Vec::with_capacity(CAPACITY);
        journal.read_to_end(&mut bytes)?;
        if let (Some(last), _) = last_frame(&bytes) {
            return Ok(Some(last.to_vec()));
        }
    }
    Ok(base)
}

/// The writer's side: one per pod, used by one writer at a time.
pub struct Journal {
    dir: PathBuf,
    mode: u32,
    /// The journal this writer's `prepare` renamed into place, and where its frames end.
    /// `None` until then (a journal left by an earlier shim may end in a torn frame: the
    /// first save compacts it away rather than write after it) and after a failed write.
    open: Option<(File, u64)>,
    /// Whether a compaction left the base holding the newest record and no journal.
    wanted: bool,
    /// Whether frames were written to the open journal since its last `sync`.
    unsynced: bool,
    /// A first record renamed into place, for `sync` to flush (see the module's doc).
    unflushed_base: Option<Replaced>,
}

/// How far `Journal::write` got a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// Written to the file: every reader and a restarted writer read it, and a crash of the
    /// machine may lose it until `Journal::sync`.
    Kernel,
    /// On the disk (a compaction of a record that replaced another).
    Disk,
}

impl Journal {
    /// The journal of the pod directory `dir`, its files made with permission bits `mode`.
    pub fn new(dir: &Path, mode: u32) -> Journal {
        Journal {
            dir: dir.to_path_buf(),
            mode,
            open: None,
            wanted: false,
            unsynced: false,
            unflushed_base: None,
        }
    }

    /// Forgets the journal it wrote (the pod's directory was removed): a later save compacts,
    /// into a directory that must exist again.
    pub fn close(&mut self) {
        self.open = None;
        self.wanted = false;
        self.unsynced = false;
        self.unflushed_base = None;
    }

    /// Leaves the record in the base alone, the journal gone: for a shim that stops while
    /// its pod stays, so that a shim of an earlier release, which reads only the base, finds
    /// the record whole. A save after this starts a journal afresh.
    pub fn fold(&mut self) -> io::Result<()> {
        self.flush_base()?;
        self.open = None;
        self.wanted = false;
        self.unsynced = false;
        let journal = self.dir.join(JOURNAL_FILE);
        let bytes = match fs::read(&journal) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if let (Some(last), _) = last_frame(&bytes) {
            atomic_write(&self.dir.join(STATE_FILE), last, self.mode)?;
        }
        fs::remove_file(&journal)?;
        File::open(&self.dir)?.sync_all()
    }

    /// Makes `record` what a reader gets, durably: a frame and an `fdatasync` when the
    /// journal has room, else a compaction.
    pub fn save(&mut self, record: &[u8]) -> io::Result<()> {
        match self.write(record)? {
            Reached::Disk => Ok(()),
            Reached::Kernel => self.sync(),
        }
    }

    /// Makes `record` what a reader gets: a frame written into the journal when it has room
    /// (in the kernel's cache, so a reader or a shim that restarts after this one died reads
    /// it; `sync` puts it on the disk), else a compaction, which is durable at once (but for
    /// a pod's first record, which `sync` flushes as it does a frame).
    pub fn write(&mut self, record: &[u8]) -> io::Result<Reached> {
        let frame = frame(record)?;
        if let Some((file, end)) = &mut self.open {
            let fits = usize::try_from(*end)
                .ok()
                .and_then(|end| end.checked_add(frame.len()))
                .is_some_and(|new_end| new_end <= CAPACITY);
            if fits {
                return match file.write_all_at(&frame, *end) {
                    Ok(()) => {
                        *end += frame.len() as u64;
                        self.unsynced = true;
                        Ok(Reached::Kernel)
                    }
                    Err(e) => {
                        // What reached the file of that frame is unknown: the next save
                        // compacts rather than write after it.
                        self.open = None;
                        Err(e)
                    }
                };
            }
        }
        self.compact(record)
    }

    /// Puts every frame written so far on the disk (`fdatasync`); nothing to do when a
    /// compaction has made the newest record durable since.
    pub fn sync(&mut self) -> io::Result<()> {
        self.flush_base()?;
        if !self.unsynced {
            return Ok(());
        }
        let Some((file, _)) = &self.open else {
            // A write after them failed and let the journal go: the next save compacts.
            return Err(io::Error::other(
                "the journal's frames were lost to a failed write",
            ));
        };
        match file.sync_data() {
            Ok(()) => {
                self.unsynced = false;
                Ok(())
            }
            Err(e) => {
                // Which of the frames reached the disk is unknown: the next save compacts.
                self.open = None;
                Err(e)
            }
        }
    }

    /// A first record renamed into place and not yet flushed, flushed; after a failure the
    /// next save is a durable compaction.
    fn flush_base(&mut self) -> io::Result<()> {
        let Some(base) = self.unflushed_base.take() else {
            return Ok(());
        };
        base.flush().inspect_err(|_| {
            // No journal is made on a base that may not be on the disk.
            self.wanted = false;
        })
    }

    /// Whether the pod's directory holds no record yet, nor one on its way to the disk: a
    /// first record has none to replace (see the module's doc). A directory that cannot be
    /// read says no, and gets a durable compaction.
    fn first_record(&self) -> bool {
        let absent = |name: &str| {
            matches!(fs::symlink_metadata(self.dir.join(name)),
                Err(e) if e.kind() == io::ErrorKind::NotFound)
        };
        self.unflushed_base.is_some() || (absent(STATE_FILE) && absent(JOURNAL_FILE))
    }

    /// The base replaced with `record`, then the old journal (whose frames are older) gone.
    /// The fresh journal is made by `prepare`, off the path of the save that waits for this.
    fn compact(&mut self, record: &[u8]) -> io::Result<Reached> {
        self.open = None;
        self.wanted = false;
        self.unsynced = false;
        if self.first_record() {
            self.unflushed_base = Some(replace_for_flush(
                &self.dir.join(STATE_FILE),
                record,
                self.mode,
            )?);
            self.wanted = true;
            return Ok(Reached::Kernel);
        }
        atomic_write(&self.dir.join(STATE_FILE), record, self.mode)?;
        match fs::remove_file(self.dir.join(JOURNAL_FILE)) {
            Ok(()) => File::open(&self.dir)?.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.wanted = true;
        Ok(Reached::Disk)
    }

    /// Makes the fresh journal a compaction left wanted, for the next saves to be frames:
    /// for the writer to call when no save waits. A journal with no frame yet reads as the
    /// base, which holds the newest record, so it can be renamed in at any time.
    pub fn prepare(&mut self) -> io::Result<()> {
        self.flush_base()?;
        if !self.wanted {
            return Ok(());
        }
        self.wanted = false;
        let tmp = self
            .dir
            .join(format!(".{JOURNAL_FILE}.tmp.{}", std::process::id()));
        let made = (|| {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .mode(self.mode)
                .open(&tmp)?;
            // Zeros written, not merely allocated: an allocated block written for the first
            // time is a metadata change, which `fdatasync` would have to commit. (From a
            // static: pages of zeros nothing wrote to cost no memory, a stack array would.)
            static ZEROS: [u8; CAPACITY] = [0; CAPACITY];
            file.write_all(&ZEROS)?;
            file.sync_all()?;
            fs::rename(&tmp, self.dir.join(JOURNAL_FILE))?;
            File::open(&self.dir)?.sync_all()?;
            Ok::<File, io::Error>(file)
        })();
        match made {
            Ok(file) => {
                self.open = Some((file, 0));
                self.unsynced = false;
                Ok(())
            }
            Err(e) => {
                // The saves go on as compactions, each of which asks again.
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Vec<u8> {
        format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(500 + n * 37 % 1500)).into_bytes()
    }

    /// A save, then the writer idle, as the shim's writer is once no save waits.
    fn save(journal: &mut Journal, record: &[u8]) {
        journal.save(record).expect("save");
        journal.prepare().expect("prepare");
    }

    fn read_back(dir: &Path) -> Vec<u8> {
        read(dir).expect("read").expect("a record")
    }

    #[test]
    fn every_save_is_read_back_across_compactions() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()).expect("read"), None);
        let mut journal = Journal::new(dir.path(), 0o600);
        let mut compactions = 0;
        let mut last_base = Vec::new();
        for n in 0..400 {
            // Now and then saves come too close for the writer to make a fresh journal.
            if n % 7 == 0 {
                journal.save(&record(n)).expect("save");
            } else {
                save(&mut journal, &record(n));
            }
            assert_eq!(read_back(dir.path()), record(n), "save {n}");
            let base = fs::read(dir.path().join(STATE_FILE)).expect("base");
            if base != last_base {
                compactions += 1;
                last_base = base;
            }
            // A new writer (a restarted shim) reads the same and goes on from there.
            if n == 250 {
                journal = Journal::new(dir.path(), 0o600);
            }
        }
        assert!(compactions > 3, "the journal filled and was compacted");
        assert!(compactions < 120, "most saves were frames: {compactions}");
        for name in [STATE_FILE, JOURNAL_FILE] {
            let meta = fs::metadata(dir.path().join(name)).expect("stat");
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        }
        assert_eq!(
            fs::metadata(dir.path().join(JOURNAL_FILE))
                .expect("stat")
                .len(),
            CAPACITY as u64,
            "frames are written into the space the journal has"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporaries left: {names:?}");
    }

    /// A crash cuts the last frame's write anywhere, or leaves only some of its sectors: the
    /// reader gets the save before it, never an error or a blend.
    #[test]
    fn a_torn_last_frame_reads_as_the_save_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        for n in 0..3 {
            save(&mut journal, &record(n));
        }
        let path = dir.path().join(JOURNAL_FILE);
        let whole = fs::read(&path).expect("journal");
        let (_, end) = last_frame(&whole);
        let last = frame(&record(2)).expect("frame");
        let start = end - last.len();
        for cut in start..end {
            let mut torn = whole.clone();
            torn[cut..end].fill(0);
            fs::write(&path, &torn).expect("write");
            assert_eq!(read_back(dir.path()), record(1), "cut at {cut}");
        }
        for flipped in start..end {
            let mut torn = whole.clone();
            torn[flipped] ^= 0x20;
            fs::write(&path, &torn).expect("write");
            assert_eq!(read_back(dir.path()), record(1), "byte {flipped} changed");
        }
        // A restarted writer does not write after the torn frame.
        let mut torn = whole.clone();
        torn[end - 1] ^= 1;
        fs::write(&path, &torn).expect("write");
        let mut journal = Journal::new(dir.path(), 0o600);
        save(&mut journal, &record(7));
        save(&mut journal, &record(8));
        assert_eq!(read_back(dir.path()), record(8));
    }

    /// The states a crash can leave a compaction in.
    #[test]
    fn a_compaction_cut_short_reads_as_a_saved_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        save(&mut journal, &record(1));
        save(&mut journal, &record(2));
        assert!(journal.open.is_some(), "the second save was a frame");
        // Cut after the base was replaced, before the old journal was unlinked: the old
        // journal's last frame is the newest acknowledged save.
        atomic_write(&dir.path().join(STATE_FILE), &record(3), 0o600).expect("base");
        assert_eq!(read_back(dir.path()), record(2));
        // Cut after the unlink: the base is the record.
        fs::remove_file(dir.path().join(JOURNAL_FILE)).expect("unlink");
        assert_eq!(read_back(dir.path()), record(3));
        // Cut once the fresh journal is in, before its first frame.
        fs::write(dir.path().join(JOURNAL_FILE), vec![0; CAPACITY]).expect("fresh");
        assert_eq!(read_back(dir.path()), record(3));
    }

    /// The first save of a pod costs what an atomic replacement does; the journal comes once
    /// the writer is idle, and the saves after it are frames.
    #[test]
    fn the_journal_is_made_when_the_writer_is_idle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        journal.save(&record(1)).expect("save");
        assert!(!dir.path().join(JOURNAL_FILE).exists());
        assert_eq!(read_back(dir.path()), record(1));
        journal
            .save(&record(2))
            .expect("a second save before the writer was idle");
        journal.prepare().expect("prepare");
        assert_eq!(
            read_back(dir.path()),
            record(2),
            "a fresh journal reads as the base"
        );
        journal.save(&record(3)).expect("save");
        assert_eq!(
            fs::read(dir.path().join(STATE_FILE)).expect("base"),
            record(2)
        );
        assert_eq!(read_back(dir.path()), record(3), "a frame");
        journal.prepare().expect("nothing to prepare");
        assert_eq!(read_back(dir.path()), record(3));
    }

    #[test]
    fn a_folded_journal_leaves_the_record_in_the_base_and_saves_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        for n in 0..3 {
            save(&mut journal, &record(n));
        }
        journal.fold().expect("fold");
        assert!(!dir.path().join(JOURNAL_FILE).exists());
        assert_eq!(
            fs::read(dir.path().join(STATE_FILE)).expect("base"),
            record(2),
            "the base alone holds the last save"
        );
        journal.fold().expect("folding again is nothing");
        save(&mut journal, &record(3));
        save(&mut journal, &record(4));
        assert_eq!(read_back(dir.path()), record(4));
    }

    #[test]
    fn a_failed_frame_makes_the_next_save_a_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        save(&mut journal, &record(1));
        // A handle that cannot write stands in for a disk that failed the frame.
        let read_only = File::open(dir.path().join(JOURNAL_FILE)).expect("open");
        journal.open = Some((read_only, 0));
        assert!(journal.save(&record(2)).is_err());
        assert!(journal.open.is_none());
        save(&mut journal, &record(3));
        assert_eq!(read_back(dir.path()), record(3));
    }

    /// A frame written and not yet flushed is what readers get; `sync` flushes every frame
    /// written since the last, and a compaction needs none.
    #[test]
    fn a_written_frame_is_read_before_it_is_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        assert_eq!(journal.write(&record(1)).expect("write"), Reached::Kernel);
        journal.prepare().expect("prepare");
        journal.sync().expect("nothing to flush");
        assert_eq!(journal.write(&record(2)).expect("write"), Reached::Kernel);
        assert_eq!(journal.write(&record(3)).expect("write"), Reached::Kernel);
        assert!(journal.unsynced);
        assert_eq!(read_back(dir.path()), record(3));
        journal.sync().expect("flush");
        assert!(!journal.unsynced);
        assert_eq!(read_back(dir.path()), record(3));
    }

    /// A pod's first record is written like a frame and flushed by `sync` (or before the
    /// journal is made); a compaction that replaces a record is durable at once. What a crash
    /// of the machine can leave of an unflushed first record, an empty base, reads as none.
    #[test]
    fn a_first_record_is_flushed_by_sync_and_an_empty_base_is_no_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        assert_eq!(journal.write(&record(1)).expect("write"), Reached::Kernel);
        assert_eq!(read_back(dir.path()), record(1), "read before its flush");
        assert!(journal.unflushed_base.is_some());
        // Saves that come before the writer was idle replace it the same way.
        assert_eq!(journal.write(&record(2)).expect("write"), Reached::Kernel);
        assert_eq!(read_back(dir.path()), record(2));
        journal.sync().expect("flush");
        assert!(journal.unflushed_base.is_none());
        assert_eq!(
            journal.write(&record(3)).expect("write"),
            Reached::Disk,
            "with no journal yet, a record that replaces one is compacted durably"
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        assert_eq!(journal.write(&record(1)).expect("write"), Reached::Kernel);
        journal
            .prepare()
            .expect("prepare flushes the base, then makes the journal");
        assert!(journal.unflushed_base.is_none());
        assert!(dir.path().join(JOURNAL_FILE).exists());
        assert_eq!(read_back(dir.path()), record(1));

        // A base whose data a crash lost, with or without the journal made after it.
        for journal_made in [false, true] {
            let dir = tempfile::tempdir().expect("tempdir");
            fs::write(dir.path().join(STATE_FILE), b"").expect("empty base");
            if journal_made {
                fs::write(dir.path().join(JOURNAL_FILE), vec![0; CAPACITY]).expect("journal");
            }
            assert_eq!(
                read(dir.path()).expect("read"),
                None,
                "journal: {journal_made}"
            );
            // The next shim's first save is a first record again.
            let mut journal = Journal::new(dir.path(), 0o600);
            assert_eq!(
                journal.write(&record(5)).expect("write"),
                Reached::Disk,
                "a base is there to replace"
            );
            assert_eq!(read_back(dir.path()), record(5));
        }
    }

    /// Frames written but not flushed, then a write that fails: their flush cannot be
    /// vouched for, so it fails, and the next save is a compaction that holds them all.
    #[test]
    fn a_failed_write_fails_the_flush_of_the_frames_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        save(&mut journal, &record(1));
        assert_eq!(journal.write(&record(2)).expect("write"), Reached::Kernel);
        let read_only = File::open(dir.path().join(JOURNAL_FILE)).expect("open");
        journal.open = Some((read_only, 0));
        assert!(journal.write(&record(3)).is_err());
        assert!(
            journal.sync().is_err(),
            "record 2's flush is not vouched for"
        );
        assert_eq!(journal.write(&record(4)).expect("write"), Reached::Disk);
        journal.sync().expect("the compaction made it whole");
        assert_eq!(read_back(dir.path()), record(4));
    }

    #[test]
    fn a_record_larger_than_the_journal_goes_to_the_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut journal = Journal::new(dir.path(), 0o600);
        let big = vec![b'x'; CAPACITY * 2];
        save(&mut journal, &record(1));
        journal.save(&big).expect("save");
        assert_eq!(read_back(dir.path()), big);
        save(&mut journal, &record(2));
        assert_eq!(read_back(dir.path()), record(2));
    }

    #[test]
    fn frames_parse_back_and_garbage_parses_as_nothing() {
        let mut bytes = Vec::new();
        for payload in [&b""[..], b"a", b"{\"x\":1}"] {
            bytes.extend(frame(payload).expect("frame"));
            assert_eq!(last_frame(&bytes), (Some(payload), bytes.len()));
        }
        assert_eq!(last_frame(b""), (None, 0));
        assert_eq!(last_frame(b"DPJ1"), (None, 0));
        assert_eq!(last_frame(b"DPJ1\xff\xff\xff\xff\0\0\0\0"), (None, 0));
        assert_eq!(last_frame(&[0; 64]), (None, 0));
    }
}
