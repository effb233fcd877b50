//! Files made for one process from bytes kubefn holds: a replica's secrets. In the sandbox
//! they never touch a host path: each value goes into an anonymous memory file (memfd), whose
//! descriptor bwrap inherits and copies (`--ro-bind-data`) into a read-only file of the new
//! mount namespace, so only that process tree can see it, and it is gone when the process is.
//! Without a sandbox (`--single-user`) they are plain files in the replica's private run
//! directory (mode 0600).

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

/// A file for one process, with its contents.
#[derive(Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Where it appears inside the sandbox (an absolute path).
    pub inside: PathBuf,
    /// What it holds.
    pub contents: Arc<[u8]>,
}

/// Never prints the contents: they are secrets.
impl std::fmt::Debug for DataFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("DataFile").field("inside", &self.inside).finish_non_exhaustive()
    }
}

/// Memory files holding `files`' contents, positioned at their start (bwrap reads from there),
/// closed on exec unless [`inherit`] clears that in the child.
pub(super) fn memory_files(files: &[DataFile]) -> std::io::Result<Vec<OwnedFd>> {
    files
        .iter()
        .map(|file| {
            // SAFETY: memfd_create takes a NUL-terminated name and flags; the result is checked.
            let fd = unsafe { libc::memfd_create(c"kubefn-data".as_ptr(), libc::MFD_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: `fd` is a new descriptor nothing else owns.
            let mut memory = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
            memory.write_all(&file.contents)?;
            memory.seek(SeekFrom::Start(0))?;
            Ok(OwnedFd::from(memory))
        })
        .collect()
}

/// The raw numbers of `fds`, for bwrap's arguments and [`inherit`].
pub(super) fn numbers(fds: &[OwnedFd]) -> Vec<RawFd> {
    fds.iter().map(AsRawFd::as_raw_fd).collect()
}

/// In the forked child, before exec: lets bwrap inherit `fds` (only this child: the parent's
/// copies stay close-on-exec, so no other process kubefn starts meanwhile gets them).
pub(super) fn inherit(fds: &[RawFd]) -> std::io::Result<()> {
    for &fd in fds {
        // SAFETY: fcntl on a descriptor this process holds; async-signal-safe.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Writes `files` under `dir` by their names (single-user mode: no sandbox to make them in),
/// readable by their owner only.
pub fn write_into(dir: &std::path::Path, files: &[DataFile]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    for file in files {
        let name = file.inside.file_name().ok_or_else(|| std::io::Error::other("a data file needs a name"))?;
        let mut out =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(dir.join(name))?;
        out.write_all(&file.contents)?;
    }
    Ok(())
}
