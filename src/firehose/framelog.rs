//! Frame log files for `record` and `replay`: repeated
//! `[u32 little-endian length][frame bytes]`, zstd-compressed when the file
//! name ends in `.zst` (the layout of the jetstream corpus `frames.bin`).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// A length above this is a corrupt file, not a large frame: the reader stops
/// there rather than allocate it. Frames between the protocol limit and this
/// are read and handed on, so the decoder rejects them with a counted reason.
pub const MAX_LOGGED_FRAME: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameLogError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: file ends mid-frame: frame {frame} at byte {offset} ({why})")]
    Truncated { path: PathBuf, frame: u64, offset: u64, why: &'static str },
    #[error("{path}: frame {frame} at byte {offset} declares {len} bytes, over {MAX_LOGGED_FRAME}: corrupt file")]
    Corrupt { path: PathBuf, frame: u64, offset: u64, len: u64 },
}

/// Reads frames one at a time into a reused buffer.
pub struct FrameReader {
    path: PathBuf,
    inner: Box<dyn Read + Send>,
    /// Frames read so far.
    pub frames: u64,
    /// Bytes of (decompressed) log consumed so far.
    pub offset: u64,
}

fn is_zst(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "zst")
}

impl FrameReader {
    pub fn open(path: &Path) -> Result<FrameReader, FrameLogError> {
        let io_err = |source| FrameLogError::Io { path: path.to_owned(), source };
        let file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err)?);
        let inner: Box<dyn Read + Send> =
            if is_zst(path) { Box::new(zstd::Decoder::with_buffer(file).map_err(io_err)?) } else { Box::new(file) };
        Ok(FrameReader { path: path.to_owned(), inner, frames: 0, offset: 0 })
    }

    /// Reads the next frame into `buf`; `Ok(false)` at a clean end of file.
    pub fn next_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, FrameLogError> {
        let mut len = [0u8; 4];
        let got = read_full(&mut self.inner, &mut len)
            .map_err(|source| FrameLogError::Io { path: self.path.clone(), source })?;
        if got == 0 {
            return Ok(false);
        }
        if got < 4 {
            return Err(self.truncated("length prefix cut short"));
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_LOGGED_FRAME {
            return Err(FrameLogError::Corrupt {
                path: self.path.clone(),
                frame: self.frames,
                offset: self.offset,
                len: n as u64,
            });
        }
        buf.clear();
        buf.resize(n, 0);
        let got =
            read_full(&mut self.inner, buf).map_err(|source| FrameLogError::Io { path: self.path.clone(), source })?;
        if got < n {
            return Err(self.truncated("frame bytes cut short"));
        }
        self.frames += 1;
        self.offset += 4 + n as u64;
        Ok(true)
    }

    fn truncated(&self, why: &'static str) -> FrameLogError {
        FrameLogError::Truncated { path: self.path.clone(), frame: self.frames, offset: self.offset, why }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Appends frames to a new log file.
pub struct FrameWriter {
    inner: Box<dyn WriteFinish>,
    pub frames: u64,
}

trait WriteFinish: Write + Send {
    fn finish(self: Box<Self>) -> io::Result<()>;
}

impl WriteFinish for BufWriter<File> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.flush()?;
        self.get_ref().sync_all()
    }
}

impl WriteFinish for zstd::Encoder<'static, BufWriter<File>> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut w = (*self).finish()?;
        w.flush()?;
        w.get_ref().sync_all()
    }
}

impl FrameWriter {
    /// Creates (truncates) `path`; zstd level 3 when it ends in `.zst`.
    pub fn create(path: &Path) -> io::Result<FrameWriter> {
        let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let inner: Box<dyn WriteFinish> =
            if is_zst(path) { Box::new(zstd::Encoder::new(file, 3)?) } else { Box::new(file) };
        Ok(FrameWriter { inner, frames: 0 })
    }

    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len()).map_err(|_| io::Error::other("frame over 4 GiB"))?;
        self.inner.write_all(&len.to_le_bytes())?;
        self.inner.write_all(frame)?;
        self.frames += 1;
        Ok(())
    }

    /// Flushes, ends the zstd stream and syncs the file.
    pub fn finish(self) -> io::Result<()> {
        self.inner.finish()
    }
}

/// Reads a whole log into memory (tests and benches).
pub fn read_all(path: &Path) -> Result<Vec<Vec<u8>>, FrameLogError> {
    let mut r = FrameReader::open(path)?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while r.next_into(&mut buf)? {
        out.push(std::mem::take(&mut buf));
    }
    Ok(out)
}
