//! One worker's access-log output: rendered lines wait in a bounded buffer
//! ([`BUFFER_BYTES`]) and are written once per loop turn ([`Writer::flush`]) without
//! blocking. What does not fit is dropped and counted, never waited for.
//!
//! # Destinations
//!
//! Each worker opens the destination itself, `O_WRONLY | O_APPEND | O_NONBLOCK`:
//! - a regular file: one `write` per flush; `O_APPEND` makes each write land whole
//!   at the end, so the workers' lines interleave whole. (Linux ignores
//!   `O_NONBLOCK` for regular files: a write goes to the page cache, and only a disk
//!   so slow that writeback throttles could stall a worker for a moment.)
//! - a FIFO or pipe: writes of whole lines, each at most `PIPE_BUF` (4096) bytes, so
//!   the kernel writes each all or nothing and lines of different workers
//!   interleave whole; a line longer than `PIPE_BUF` is written alone and may be
//!   split by another worker's write. A full pipe (nobody reads) answers `EAGAIN`:
//!   the buffer fills and new lines are dropped. Opening a FIFO without a reader
//!   fails (`ENXIO`): a reader must hold it open when wsgate starts or reopens.
//! - `-`, standard output: reopened through `/proc/self/fd/1` (a new open file
//!   description, so the non-blocking flag does not touch the shared stdout), or,
//!   for a socket (systemd's journal stream), written with `MSG_DONTWAIT`.
//!
//! `SIGHUP` makes every worker [`Writer::reopen`] a file destination (log rotation:
//! rename the file, send SIGHUP, new lines go to a new file at the configured path).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Format, Record};
use crate::config::Config;

/// Rendered lines a worker holds before dropping new ones.
pub const BUFFER_BYTES: usize = 256 * 1024;
/// Lines are written once this many bytes wait, or once the oldest has waited
/// [`FLUSH_DELAY`]: a write per loop turn would cost a syscall per message or two
/// under light load (+11% CPU per message in the suite), a write per 64 KiB or
/// 50 ms costs next to nothing, and a line is at most that late.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Room a line needs at the least; a buffer with less left drops lines unrendered.
const MIN_LINE_ROOM: usize = 64;
pub const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
/// Writes to a pipe up to this size are atomic (POSIX `PIPE_BUF` on Linux).
const PIPE_BUF: usize = 4096;

/// Where access-log lines go (`access_log.path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Stdout => f.write_str("standard output"),
            Destination::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The validated `[access_log]` table.
#[derive(Debug, Clone)]
pub struct Settings {
    pub path: Destination,
    pub format: Arc<Format>,
}

/// An open destination.
enum Output {
    /// `pipe`: a FIFO or pipe, written in whole lines of at most `PIPE_BUF` bytes.
    File { file: File, pipe: bool },
    /// Standard output that is a socket: `send` with `MSG_DONTWAIT`.
    Socket(socket2::Socket),
}

impl Output {
    fn open(dest: &Destination) -> io::Result<Output> {
        let path: &Path = match dest {
            Destination::Stdout => Path::new("/proc/self/fd/1"),
            Destination::File(p) => p,
        };
        let opened = OpenOptions::new()
            .append(true)
            .create(matches!(dest, Destination::File(_)))
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        let file = match (opened, dest) {
            (Ok(f), _) => f,
            (Err(_), Destination::Stdout) => return Output::stdout_socket(),
            (Err(e), _) if e.raw_os_error() == Some(libc::ENXIO) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{e}: a FIFO must be open for reading before wsgate opens it"),
                ))
            }
            (Err(e), _) => return Err(e),
        };
        let kind = file.metadata()?.file_type();
        Ok(Output::File {
            file,
            pipe: kind.is_fifo() || kind.is_socket(),
        })
    }

    /// Standard output that cannot be reopened through `/proc`: a socket, written
    /// with `MSG_DONTWAIT`.
    fn stdout_socket() -> io::Result<Output> {
        use std::os::fd::AsFd;
        let stdout = io::stdout();
        socket2::SockRef::from(&stdout).r#type()?;
        let fd = stdout.as_fd().try_clone_to_owned()?;
        Ok(Output::Socket(socket2::Socket::from(fd)))
    }

    fn pipe(&self) -> bool {
        match self {
            Output::File { pipe, .. } => *pipe,
            Output::Socket(_) => true,
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Output::File { file, .. } => file.write(data),
            Output::Socket(s) => s.send_with_flags(data, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL),
        }
    }
}

/// One worker's access log: its format, destination and bounded line buffer.
pub struct Writer {
    dest: Destination,
    format: Arc<Format>,
    out: Output,
    /// Whole rendered lines not written yet (its front may be the rest of a line a
    /// write took only part of).
    buf: Vec<u8>,
    /// When the oldest line in `buf` was buffered (`None`: `buf` is empty).
    waiting_since: Option<std::time::Instant>,
    /// The destination took less than what waited: no new try before this (a full
    /// pipe must not make the worker spin).
    retry_at: Option<std::time::Instant>,
    /// Lines dropped since [`Writer::take_dropped`] last looked.
    dropped: u64,
    /// A write failed and was logged; the next failure is only counted.
    failing: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("dest", &self.dest)
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens this worker's handle on the destination.
    pub fn open(settings: &Settings) -> io::Result<Writer> {
        Ok(Writer {
            out: Output::open(&settings.path)?,
            dest: settings.path.clone(),
            format: settings.format.clone(),
            buf: Vec::with_capacity(BUFFER_BYTES),
            waiting_since: None,
            retry_at: None,
            dropped: 0,
            failing: false,
        })
    }

    /// Renders one line into the buffer, or drops it (counted) when it does not fit.
    pub fn log(&mut self, config: &Config, r: &Record<'_>) {
        if self.buf.len() + MIN_LINE_ROOM > BUFFER_BYTES {
            // Full: dropped before any rendering work.
            self.dropped += 1;
            return;
        }
        // Rendered in place (no copy per line), taken back if it does not fit.
        let start = self.buf.len();
        self.format.render(&mut self.buf, config, r);
        self.buf.push(b'\n');
        if self.buf.len() > BUFFER_BYTES {
            self.buf.truncate(start);
            // One huge line (a long User-Agent) does not stay resident.
            self.buf.shrink_to(BUFFER_BYTES);
            self.dropped += 1;
            return;
        }
        if start == 0 {
            self.waiting_since = Some(std::time::Instant::now());
        }
    }

    /// When the buffered lines are to be written ([`FLUSH_BYTES`] or
    /// [`FLUSH_DELAY`]); `None` while nothing waits.
    pub fn due(&self) -> Option<std::time::Instant> {
        let since = self.waiting_since?;
        let due = if self.buf.len() >= FLUSH_BYTES {
            since
        } else {
            since + FLUSH_DELAY
        };
        Some(self.retry_at.map_or(due, |r| r.max(due)))
    }

    /// Writes what the destination takes now; the rest waits for the next turn.
    /// A destination that fails (not just full) loses what is buffered, counted.
    pub fn flush(&mut self) {
        let mut done = 0;
        while done < self.buf.len() {
            let rest = &self.buf[done..];
            let chunk = if self.out.pipe() {
                whole_lines(rest, PIPE_BUF)
            } else {
                rest.len()
            };
            match self.out.write(&rest[..chunk]) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    self.failing = false;
                    if n < chunk || !self.out.pipe() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let lost = rest.iter().filter(|&&c| c == b'\n').count() as u64;
                    self.dropped += lost;
                    if !self.failing {
                        log::error!(
                            "access log {}: write failed: {e}; {lost} lines dropped",
                            self.dest
                        );
                        self.failing = true;
                    }
                    done = self.buf.len();
                }
            }
        }
        self.buf.drain(..done);
        if self.buf.is_empty() {
            self.waiting_since = None;
            self.retry_at = None;
        } else {
            self.retry_at = Some(std::time::Instant::now() + FLUSH_DELAY);
        }
    }

    /// Lines dropped since the last call (the worker adds them to
    /// `wsgate_access_log_dropped_total`).
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped)
    }

    /// Bytes waiting to be written.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Log rotation (SIGHUP): what is buffered goes to the old file if it takes it,
    /// then the configured path is opened anew. A destination that cannot be opened
    /// keeps the old one (and says so). Standard output is left as it is.
    pub fn reopen(&mut self) {
        if self.dest == Destination::Stdout {
            return;
        }
        self.flush();
        match Output::open(&self.dest) {
            Ok(out) => self.out = out,
            Err(e) => log::error!(
                "access log {}: cannot reopen: {e}; still writing to the old file",
                self.dest
            ),
        }
    }
}

/// How many bytes of `rest` to write to a pipe: whole lines up to `max` bytes, or
/// one whole line when the first is longer.
fn whole_lines(rest: &[u8], max: usize) -> usize {
    if rest.len() <= max {
        return rest.len();
    }
    match rest[..max].iter().rposition(|&c| c == b'\n') {
        Some(i) => i + 1,
        None => rest
            .iter()
            .position(|&c| c == b'\n')
            .map_or(rest.len(), |i| i + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_chunks_are_whole_lines_within_pipe_buf() {
        let line = [b'a'; 99]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let buf: Vec<u8> = line.iter().copied().cycle().take(100 * 100).collect();
        assert_eq!(whole_lines(&buf, PIPE_BUF), 4000);
        assert_eq!(whole_lines(&buf[..300], PIPE_BUF), 300);
        let mut long = vec![b'x'; 5000];
        long.push(b'\n');
        long.extend_from_slice(b"y\n");
        assert_eq!(whole_lines(&long, PIPE_BUF), 5001);
    }
}
