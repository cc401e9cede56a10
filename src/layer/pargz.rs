//! [`ParGzEncoder`]: a gzip writer that deflates on every core, pigz-style, with output
//! bytes that do not depend on how many cores there are.
//!
//! Why by hand: `flate2`'s `GzEncoder` deflates on one thread, which held gzip layer commits
//! to 37–66% of `pigz` on the same bytes (issue 7). `gzp`, the crate made for parallel
//! gzip, primes each block with the previous one's tail only when built against a C zlib
//! (its `any_zlib` needs `libz-sys` for checksums), which would put a second, C, deflate
//! beside the pinned one and make the bytes depend on which zlib the machine builds. This
//! module is the small part of pigz's scheme that is needed, on `flate2`'s pinned backend.
//!
//! The format, fixed so that a layer's blob digest depends on its tar alone:
//! - a 10-byte gzip header: no name, mtime 0, XFL 0, OS 255 (as Go's gzip writes it);
//! - the input cut into [`BLOCK`]-byte blocks; each is deflated as a raw deflate stream at
//!   the pinned level, primed with the last [`DICT`] bytes of the block before it, and
//!   ended with a sync flush (the last block with a final block instead);
//! - the CRC-32 and the input length mod 2³², little-endian.
//!
//! Blocks are cut by input position only, so the bytes are the same whatever the number of
//! worker threads or the sizes of the writes. Memory is bounded: at most `2 × workers + 1`
//! blocks are in flight, so it stays flat in layer size.

use flate2::{Compress, Crc, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Input bytes per deflate block (pigz's default).
pub(crate) const BLOCK: usize = 128 * 1024;
/// Bytes of the previous block each block is primed with (deflate's window).
pub(crate) const DICT: usize = 32 * 1024;

/// The gzip header: magic, deflate, no flags, mtime 0, XFL 0, OS 255 (unknown).
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    level: u32,
    reply: SyncSender<io::Result<Done>>,
}

struct Done {
    deflated: Vec<u8>,
    crc: Crc,
}

/// Deflates one block as described in the module doc.
fn deflate_block(data: &[u8], dict: &[u8], last: bool, level: u32) -> io::Result<Done> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Deflate's worst case is a few bytes per 16 KiB over the input; start there and grow.
    let mut out = Vec::with_capacity(data.len() + data.len() / 1000 + 64);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = c.total_in() as usize == data.len()
            && match status {
                Status::StreamEnd => true,
                // A sync flush is complete once output was left room to spare.
                Status::Ok | Status::BufError => !last && out.len() < out.capacity(),
            };
        if done {
            break;
        }
        out.reserve(out.capacity().max(4096));
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok(Done { deflated: out, crc })
}

fn worker(jobs: Arc<Mutex<Receiver<Job>>>) {
    loop {
        // The lock is held only while taking a job, not while deflating it.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let r = deflate_block(&job.data, &job.dict, job.last, job.level);
        // The writer may have gone (dropped mid-stream): nothing to tell.
        let _ = job.reply.send(r);
    }
}

/// A gzip writer deflating [`BLOCK`]-sized blocks on worker threads; see the module doc.
pub(crate) struct ParGzEncoder<W: Write> {
    inner: Option<W>,
    level: u32,
    buf: Vec<u8>,
    /// The tail of the last block handed out: the next block's dictionary.
    dict: Vec<u8>,
    /// Results in stream order; `None` when deflating inline (one worker).
    pending: VecDeque<Receiver<io::Result<Done>>>,
    jobs: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
    max_pending: usize,
    crc: Crc,
    header_written: bool,
}

impl<W: Write> ParGzEncoder<W> {
    /// A writer deflating at `level` on `workers` threads (`workers ≤ 1`: on the caller's).
    pub(crate) fn new(out: W, level: u32, workers: usize) -> Self {
        let mut threads = Vec::new();
        let mut jobs = None;
        if workers > 1 {
            let (tx, rx) = mpsc::sync_channel::<Job>(workers);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..workers {
                let rx = Arc::clone(&rx);
                threads.push(std::thread::spawn(move || worker(rx)));
            }
            jobs = Some(tx);
        }
        ParGzEncoder {
            inner: Some(out),
            level,
            buf: Vec::with_capacity(BLOCK),
            dict: Vec::new(),
            pending: VecDeque::new(),
            jobs,
            threads,
            max_pending: 2 * workers.max(1),
            crc: Crc::new(),
            header_written: false,
        }
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.inner
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    fn emit(&mut self, done: Done) -> io::Result<()> {
        if !self.header_written {
            self.out()?.write_all(&HEADER)?;
            self.header_written = true;
        }
        self.crc.combine(&done.crc);
        self.out()?.write_all(&done.deflated)
    }

    /// Writes out finished blocks at the head of the queue; waits for the head while more
    /// than `keep` are in flight.
    fn drain(&mut self, keep: usize) -> io::Result<()> {
        while let Some(rx) = self.pending.front() {
            let r = if self.pending.len() > keep {
                rx.recv()
                    .map_err(|_| io::Error::other("gzip worker thread died"))?
            } else {
                match rx.try_recv() {
                    Ok(r) => r,
                    Err(mpsc::TryRecvError::Empty) => return Ok(()),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        return Err(io::Error::other("gzip worker thread died"))
                    }
                }
            };
            self.pending.pop_front();
            self.emit(r?)?;
        }
        Ok(())
    }

    /// Hands the buffered block out (to a worker, or deflates it here).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK));
        let tail = data.len().saturating_sub(DICT);
        let dict = std::mem::replace(&mut self.dict, data[tail..].to_vec());
        match &self.jobs {
            None => {
                let done = deflate_block(&data, &dict, last, self.level)?;
                self.emit(done)
            }
            Some(jobs) => {
                let (reply, rx) = mpsc::sync_channel(1);
                let job = Job {
                    data,
                    dict,
                    last,
                    level: self.level,
                    reply,
                };
                jobs.send(job)
                    .map_err(|_| io::Error::other("gzip worker threads are gone"))?;
                self.pending.push_back(rx);
                self.drain(self.max_pending)
            }
        }
    }

    /// Ends the stream (last block, CRC and length) and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.drain(0)?;
        let (crc, len) = (self.crc.sum(), self.crc.amount());
        let mut out = self.inner.take().expect("finish runs once");
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&len.to_le_bytes())?;
        Ok(out)
    }
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let n = data.len();
        while !data.is_empty() {
            let take = (BLOCK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            // A full block waits for more input: only then is it known not to be the last.
            if self.buf.len() == BLOCK && !data.is_empty() {
                self.submit(false)?;
            }
        }
        Ok(n)
    }

    /// Writes out what the workers have finished; the open block stays buffered (a flush
    /// must not cut a block, or the bytes would depend on when flushes happen).
    fn flush(&mut self) -> io::Result<()> {
        self.drain(usize::MAX)?;
        self.out()?.flush()
    }
}

impl<W: Write> Drop for ParGzEncoder<W> {
    fn drop(&mut self) {
        // Closing the job channel ends the workers once they finish what they hold.
        self.jobs.take();
        self.pending.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
