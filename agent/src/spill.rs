//! The agent's on-disk spill (`--spill-dir`): where results go that the bounded memory buffer
//! has no room for, and where the agent keeps its id and seq across restarts.
//!
//! Results are appended to segment files (`seg-<first seq>.spill`, format in [`segment`]),
//! oldest first; a segment is closed (and synced) at 1/8 of `--spill-max-bytes` (at most
//! 8 MiB) and deleted once the federator acknowledged its last seq. Past `--spill-max-bytes`
//! the oldest segment is dropped, and its results are counted as dropped. Seqs are reserved on
//! disk [`SEQ_BLOCK`] at a time, so a crash never makes the agent hand out a seq twice; a clean
//! shutdown records the exact next seq, so a restart continues without a gap.
//! Damaged files (a crash mid-write) are read up to their last whole record; what was cut is
//! logged with the file name.

pub mod segment;
mod state;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use state::AgentState;

/// Default for `--spill-max-bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Smallest `--spill-max-bytes` accepted.
pub const MIN_MAX_BYTES: u64 = 64 << 10;
/// Seqs are reserved on disk this many at a time.
pub const SEQ_BLOCK: u64 = 10_000;
const SEGMENT_MAX_BYTES: u64 = 8 << 20;
/// The acknowledged position is written at most this often (and whenever a segment goes).
const ACKED_WRITE_EVERY: Duration = Duration::from_secs(5);
const LOCK_FILE: &str = "lock";

/// Where and how much to spill.
#[derive(Clone, Debug)]
pub struct SpillConfig {
    pub dir: PathBuf,
    /// Most bytes of segment files; beyond it the oldest are dropped (and counted).
    pub max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("cannot create the spill directory {dir}: {source}; pass a writable --spill-dir")]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}; pass a --spill-dir on a local file system")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the spill directory {dir} is in use by another agent process; give every agent its own --spill-dir"
    )]
    Locked { dir: PathBuf },
    #[error("cannot read the agent state file {path}: {source}")]
    ReadState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the agent state file {path} is not valid: {reason}; repair it, or delete it to start a new agent id (its spilled results would then be resent under the new id)"
    )]
    BadState { path: PathBuf, reason: String },
    #[error("cannot write the agent state file {path}: {source}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the spill directory {dir} belongs to agent {stored:?}, but this agent was started as {given:?}: start it with --agent-id {stored}, or give it another --spill-dir (deleting {dir} discards that agent's unsent results)"
    )]
    OtherAgent {
        dir: PathBuf,
        stored: String,
        given: String,
    },
    #[error("cannot list the spill directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read spill segment {path}: {source}")]
    ReadSegment {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write spill segment {path}: {source}")]
    WriteSegment {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an agent continues from after opening its spill directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    pub agent_id: String,
    /// The first seq this run hands out.
    pub next_seq: u64,
    /// The last acknowledged seq known on disk.
    pub acked: u64,
    /// Results found in the spill, to be resent first.
    pub spilled: u64,
}

struct Segment {
    path: PathBuf,
    first_seq: u64,
    last_seq: u64,
    records: u64,
    /// File length, header included.
    bytes: u64,
}

/// The records read so far from one segment (the one the sender is in).
struct Cache {
    first_seq: u64,
    records: Vec<(u64, Bytes)>,
    /// File offset just after the last record read.
    read_to: u64,
}

/// A read the sender needs before it can go on; done off the runtime thread by [`read`].
#[derive(Debug)]
pub struct ReadRequest {
    path: PathBuf,
    first_seq: u64,
    offset: u64,
    end: u64,
    after_seq: u64,
}

/// What the spill holds after `cursor`.
pub enum Next {
    /// Spilled results with seq above the cursor (at least one).
    Records(Vec<(u64, Bytes)>),
    /// Read this first, hand it to [`Spill::install`], then ask again.
    Read(ReadRequest),
    /// Nothing spilled after the cursor.
    Done,
}

pub struct Spill {
    dir: PathBuf,
    _lock: File,
    max_bytes: u64,
    segment_limit: u64,
    segments: VecDeque<Segment>,
    /// Appends to the newest segment while it is open.
    writer: Option<BufWriter<File>>,
    cache: Option<Cache>,
    /// `next_seq` is the durable reservation.
    state: AgentState,
    acked_stored: u64,
    acked_stored_at: Instant,
    total_bytes: u64,
    total_records: u64,
    scratch: Vec<u8>,
    /// After [`Spill::close`]: seqs are reserved one at a time.
    closed: bool,
}

impl Spill {
    /// Opens (creating if needed) and locks the directory, loads the agent's state and checks
    /// every segment. `agent_id` empty = the stored id, or a new `<node>-<random>` one.
    pub fn open(
        config: &SpillConfig,
        agent_id: &str,
        node: &str,
    ) -> Result<(Self, Recovered), SpillError> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| SpillError::CreateDir {
            dir: dir.clone(),
            source,
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| SpillError::Lock {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(SpillError::Locked { dir }),
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(SpillError::Lock {
                    path: lock_path,
                    source,
                });
            }
        }
        let stored = state::load(&dir)?;
        let (agent_id, next_seq, acked) = match stored {
            Some(s) if !agent_id.is_empty() && s.agent_id != agent_id => {
                return Err(SpillError::OtherAgent {
                    dir,
                    stored: s.agent_id,
                    given: agent_id.to_owned(),
                });
            }
            Some(s) => (s.agent_id, s.next_seq, s.acked_seq),
            None if agent_id.is_empty() => (crate::fresh_agent_id(node), 1, 0),
            None => (agent_id.to_owned(), 1, 0),
        };
        let segments = scan(&dir, acked)?;
        let last_spilled = segments.back().map_or(0, |s| s.last_seq);
        let next_seq = next_seq.max(last_spilled + 1).max(acked + 1);
        let state = AgentState {
            agent_id: agent_id.clone(),
            next_seq: (next_seq / SEQ_BLOCK + 1) * SEQ_BLOCK,
            acked_seq: acked,
        };
        state::store(&dir, &state, true)?;
        let segment_limit = (config.max_bytes / 8).clamp(16 << 10, SEGMENT_MAX_BYTES);
        let spill = Spill {
            total_bytes: segments.iter().map(|s| s.bytes).sum(),
            total_records: segments.iter().map(|s| s.records).sum(),
            dir,
            _lock: lock,
            max_bytes: config.max_bytes,
            segment_limit,
            segments,
            writer: None,
            cache: None,
            state,
            acked_stored: acked,
            acked_stored_at: Instant::now(),
            scratch: Vec::new(),
            closed: false,
        };
        let recovered = Recovered {
            agent_id,
            next_seq,
            acked,
            spilled: spill.total_records,
        };
        Ok((spill, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Results on disk not yet known to be acknowledged.
    pub fn records(&self) -> u64 {
        self.total_records
    }

    /// Bytes of segment files.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Makes sure `seq` is below the reservation on disk, writing a new one (synced) if not:
    /// the next block, or after [`Spill::close`] exactly `seq + 1`.
    pub fn reserve(&mut self, seq: u64) -> Result<(), SpillError> {
        if seq < self.state.next_seq {
            return Ok(());
        }
        let mut state = self.state.clone();
        state.next_seq = if self.closed {
            seq + 1
        } else {
            (seq / SEQ_BLOCK + 1) * SEQ_BLOCK
        };
        state::store(&self.dir, &state, true)?;
        self.acked_stored = state.acked_seq;
        self.state = state;
        Ok(())
    }

    /// Appends one encoded result. Returns how many older spilled results were dropped to
    /// stay within the size limit.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<u64, SpillError> {
        if self.writer.is_none() {
            self.open_segment(seq)?;
        }
        self.scratch.clear();
        segment::frame(seq, payload, &mut self.scratch);
        let seg = self
            .segments
            .back_mut()
            .expect("an open segment is the newest");
        let writer = self.writer.as_mut().expect("opened above");
        if let Err(source) = writer.write_all(&self.scratch) {
            // Whatever part of the record reached the file is cut off when the segment is next
            // read; close it so that nothing is appended after the damage.
            let path = seg.path.clone();
            self.writer = None;
            return Err(SpillError::WriteSegment { path, source });
        }
        let n = self.scratch.len() as u64;
        seg.last_seq = seq;
        seg.records += 1;
        seg.bytes += n;
        self.total_bytes += n;
        self.total_records += 1;
        if seg.bytes >= self.segment_limit {
            self.close_segment(false)?;
        }
        Ok(self.enforce_limit())
    }

    /// Pushes buffered appends to the file (no sync): they survive the process, not the machine.
    pub fn flush(&mut self) -> Result<(), SpillError> {
        if let Some(w) = self.writer.as_mut() {
            w.flush().map_err(|source| SpillError::WriteSegment {
                path: self.segments.back().expect("open segment").path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Everything up to `seq` is durable at the federator: deletes the segments it covers.
    /// Returns how many spilled results that released.
    pub fn ack(&mut self, seq: u64) -> u64 {
        let mut released = 0;
        while self.segments.front().is_some_and(|s| s.last_seq <= seq) {
            if self.segments.len() == 1 {
                self.writer = None;
            }
            let seg = self.segments.pop_front().expect("checked");
            released += seg.records;
            self.forget(&seg);
            if let Err(e) = std::fs::remove_file(&seg.path) {
                tracing::warn!(file = %seg.path.display(), error = %e, "cannot delete an acknowledged spill segment");
            }
        }
        if seq > self.state.acked_seq {
            self.state.acked_seq = seq.min(self.state.next_seq - 1);
        }
        // The first Ack is written at once: a Hello that says 0 after a crash would make the
        // federator take this agent for a new incarnation and write resent results twice.
        if self.state.acked_seq > self.acked_stored
            && (released > 0
                || self.acked_stored == 0
                || self.acked_stored_at.elapsed() >= ACKED_WRITE_EVERY)
        {
            self.store_acked(false);
        }
        released
    }

    /// At shutdown: syncs the open segment, and the state with `next_seq` (the first seq not
    /// handed out), so that a restart resends what is here and continues the seqs without a
    /// gap. Seqs handed out later are recorded one by one ([`Spill::reserve`]).
    pub fn close(&mut self, next_seq: u64) -> Result<(), SpillError> {
        if self.writer.is_some() {
            self.close_segment(true)?;
        }
        self.closed = true;
        // Never below what was already handed out by an earlier run.
        self.state.next_seq = next_seq.max(self.state.acked_seq + 1);
        state::store(&self.dir, &self.state, true)
    }

    /// The next spilled results after `cursor`, at most `max` and about `max_bytes`.
    pub fn next(&mut self, cursor: u64, max: usize, max_bytes: usize) -> Next {
        loop {
            let Some(i) = self.segments.iter().position(|s| s.last_seq > cursor) else {
                return Next::Done;
            };
            let seg = &self.segments[i];
            let cache = self.cache.as_ref().filter(|c| c.first_seq == seg.first_seq);
            let Some(cache) = cache else {
                return self.read_request(i, 0, 0);
            };
            let from = cache.records.partition_point(|(s, _)| *s <= cursor);
            if from < cache.records.len() {
                let mut out = Vec::new();
                let mut size = 0;
                for (seq, bytes) in &cache.records[from..] {
                    if out.len() >= max || (size + bytes.len() > max_bytes && !out.is_empty()) {
                        break;
                    }
                    size += bytes.len();
                    out.push((*seq, bytes.clone()));
                }
                return Next::Records(out);
            }
            if cache.read_to < seg.bytes {
                let after = cache.records.last().map_or(0, |r| r.0);
                return self.read_request(i, cache.read_to, after);
            }
            // The file held fewer records than counted (damaged since it was opened): believe
            // the file, whose records all lie at or below the cursor.
            let last = cache.records.last().map_or(seg.first_seq - 1, |r| r.0);
            self.segments[i].last_seq = last;
        }
    }

    fn read_request(&mut self, i: usize, offset: u64, after_seq: u64) -> Next {
        if i + 1 == self.segments.len()
            && let Err(e) = self.flush()
        {
            tracing::warn!(error = %e, "cannot flush the open spill segment before reading it");
        }
        let seg = &self.segments[i];
        Next::Read(ReadRequest {
            path: seg.path.clone(),
            first_seq: seg.first_seq,
            offset,
            end: seg.bytes,
            after_seq,
        })
    }

    /// Takes in what [`read`] returned for `req`. Returns how many spilled results were lost
    /// because their segment could not be read (counted as dropped by the caller).
    pub fn install(&mut self, req: ReadRequest, read: Result<segment::Parsed, SpillError>) -> u64 {
        let Some(i) = self
            .segments
            .iter()
            .position(|s| s.first_seq == req.first_seq)
        else {
            return 0; // dropped or acknowledged meanwhile
        };
        let mut parsed = match read {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "dropping an unreadable spill segment");
                let seg = self.segments.remove(i).expect("found");
                self.forget(&seg);
                if i == self.segments.len() {
                    self.writer = None;
                }
                return seg.records;
            }
        };
        if parsed.cut.is_none() && parsed.end < req.end {
            parsed.cut = Some(format!(
                "the file ends {} bytes early (a failed write?)",
                req.end - parsed.end
            ));
        }
        if let Some(cut) = &parsed.cut {
            tracing::warn!(file = %req.path.display(), offset = parsed.end, what = %cut, "spill segment damaged; its later bytes are skipped");
            if i + 1 == self.segments.len() {
                self.writer = None; // append nothing after the damage
            }
            let seg = &mut self.segments[i];
            self.total_bytes -= (seg.bytes - parsed.end.min(seg.bytes)).min(self.total_bytes);
            seg.bytes = parsed.end.min(seg.bytes);
        }
        match self.cache.as_mut() {
            Some(c) if c.first_seq == req.first_seq && c.read_to == req.offset => {
                c.records.extend(parsed.records);
                c.read_to = parsed.end;
            }
            _ => {
                self.cache = Some(Cache {
                    first_seq: req.first_seq,
                    records: parsed.records,
                    read_to: parsed.end,
                });
            }
        }
        0
    }

    fn open_segment(&mut self, first_seq: u64) -> Result<(), SpillError> {
        let path = self.dir.join(format!("seg-{first_seq:020}.spill"));
        let open = || -> std::io::Result<BufWriter<File>> {
            let f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)?;
            let mut w = BufWriter::with_capacity(64 << 10, f);
            w.write_all(segment::MAGIC)?;
            Ok(w)
        };
        let writer = open().map_err(|source| SpillError::WriteSegment {
            path: path.clone(),
            source,
        })?;
        let bytes = segment::MAGIC.len() as u64;
        self.segments.push_back(Segment {
            path,
            first_seq,
            last_seq: first_seq - 1,
            records: 0,
            bytes,
        });
        self.total_bytes += bytes;
        self.writer = Some(writer);
        Ok(())
    }

    /// Flushes and closes the open segment; syncs it here when `now`, else on a blocking thread.
    fn close_segment(&mut self, now: bool) -> Result<(), SpillError> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let path = self.segments.back().expect("open segment").path.clone();
        let file = w.into_inner().map_err(|e| SpillError::WriteSegment {
            path: path.clone(),
            source: e.into_error(),
        })?;
        let sync = move || {
            if let Err(e) = file.sync_all() {
                tracing::warn!(file = %path.display(), error = %e, "cannot sync a closed spill segment");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if !now => drop(rt.spawn_blocking(sync)),
            _ => sync(),
        }
        Ok(())
    }

    /// Drops the oldest closed segments while the spill is over its size limit.
    fn enforce_limit(&mut self) -> u64 {
        let mut dropped = 0;
        while self.total_bytes > self.max_bytes && self.segments.len() > 1 {
            let seg = self.segments.pop_front().expect("checked");
            self.forget(&seg);
            dropped += seg.records;
            tracing::warn!(
                file = %seg.path.display(),
                results = seg.records,
                first_seq = seg.first_seq,
                last_seq = seg.last_seq,
                max_bytes = self.max_bytes,
                "spill full; dropping its oldest segment"
            );
            if let Err(e) = std::fs::remove_file(&seg.path) {
                tracing::warn!(file = %seg.path.display(), error = %e, "cannot delete a dropped spill segment");
            }
        }
        dropped
    }

    fn forget(&mut self, seg: &Segment) {
        self.total_bytes -= seg.bytes.min(self.total_bytes);
        self.total_records -= seg.records.min(self.total_records);
        if self
            .cache
            .as_ref()
            .is_some_and(|c| c.first_seq == seg.first_seq)
        {
            self.cache = None;
        }
    }

    fn store_acked(&mut self, durable: bool) {
        match state::store(&self.dir, &self.state, durable) {
            Ok(()) => {
                self.acked_stored = self.state.acked_seq;
                self.acked_stored_at = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "cannot record the acknowledged seq"),
        }
    }
}

/// Reads what `req` asks for (blocking file IO: call it off the runtime thread).
pub fn read(req: &ReadRequest) -> Result<segment::Parsed, SpillError> {
    let err = |source| SpillError::ReadSegment {
        path: req.path.clone(),
        source,
    };
    let mut f = File::open(&req.path).map_err(err)?;
    f.seek(SeekFrom::Start(req.offset)).map_err(err)?;
    let mut buf = Vec::with_capacity(usize::try_from(req.end - req.offset).unwrap_or(0));
    f.take(req.end - req.offset)
        .read_to_end(&mut buf)
        .map_err(err)?;
    Ok(segment::parse(Bytes::from(buf), req.offset, req.after_seq))
}

/// The segments in `dir`, oldest first, each checked record by record: damaged tails are cut
/// (and logged), files without a whole record and segments already acknowledged are deleted.
fn scan(dir: &Path, acked: u64) -> Result<VecDeque<Segment>, SpillError> {
    let listing = std::fs::read_dir(dir).map_err(|source| SpillError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in listing.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(first) = name
            .strip_prefix("seg-")
            .and_then(|n| n.strip_suffix(".spill"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        files.push((first, entry.path()));
    }
    files.sort();
    let mut segments = VecDeque::new();
    let mut after = 0;
    for (first_seq, path) in files {
        let req = ReadRequest {
            end: std::fs::metadata(&path).map_or(0, |m| m.len()),
            path,
            first_seq,
            offset: 0,
            after_seq: after,
        };
        let parsed = match read(&req) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "skipping an unreadable spill segment");
                continue;
            }
        };
        let path = req.path;
        if let Some(cut) = &parsed.cut {
            tracing::warn!(
                file = %path.display(),
                kept_results = parsed.records.len(),
                cut_at = parsed.end,
                cut_bytes = req.end - parsed.end,
                what = %cut,
                "spill segment damaged (a crash mid-write?); keeping the whole records before the damage"
            );
        }
        let Some(&(last_seq, _)) = parsed.records.last() else {
            tracing::warn!(file = %path.display(), "deleting a spill segment without a whole record");
            let _ = std::fs::remove_file(&path);
            continue;
        };
        if last_seq <= acked {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if parsed.cut.is_some()
            && let Err(e) = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(parsed.end))
        {
            tracing::warn!(file = %path.display(), error = %e, "cannot cut the damaged tail off a spill segment");
        }
        after = last_seq;
        segments.push_back(Segment {
            path,
            first_seq: parsed.records[0].0,
            last_seq,
            records: parsed.records.iter().filter(|r| r.0 > acked).count() as u64,
            bytes: parsed.end,
        });
    }
    Ok(segments)
}

/// Parses a size like `1GiB`, `512MiB`, `64KiB` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let how = "write it like 1GiB, 512MiB, 64KiB or a number of bytes";
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size; {how}"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} in {s:?}; {how}")),
    };
    let bytes = n
        .checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < MIN_MAX_BYTES {
        return Err(format!(
            "{s:?} is below the smallest spill size, 64KiB; {how}"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
