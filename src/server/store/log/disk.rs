//! The seam between the log's writer and the disk: every write, sync, rename and truncation of
//! a data directory goes through [`Disk`], so a test can see the order of writes and syncs and
//! inject a full disk, a short write or a failed sync. [`RealDisk`] is the file system.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Where the writer puts its bytes. The one implementation outside tests is [`RealDisk`].
pub trait Disk: Send + Sync {
    /// Opens `path` for appending, creating it if needed.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Writes `bytes` as the whole of a new file `path` and syncs it.
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Renames `from` over `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Syncs the directory `dir` (its entries: a created or renamed file).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open log file. After an error from [`LogFile::sync_data`] the descriptor is given up: a
/// failed `fsync` may have dropped the dirty pages it could not write, and a second `fsync` on
/// the same descriptor would report success for data that is gone. The writer reopens the file
/// and rewrites instead.
pub trait LogFile: Send {
    /// Appends all of `bytes`.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Syncs the file's data (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes and syncs it.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// The file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealDisk;

impl Disk for RealDisk {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

struct RealFile(File);

impl LogFile for RealFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
}
