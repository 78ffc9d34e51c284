//! Reading the files a user names: the mbsyncrc, a `CertificateFile`,
//! himalaya's config.toml, mbsync's state files.
//!
//! Such a path may name anything: a FIFO, whose `open` waits for a writer
//! that never comes, or a device such as `/dev/zero`, which never ends. Some
//! of these reads run on Neovim's own thread, where either would freeze the
//! editor for good. So the file is opened without waiting (`O_NONBLOCK`,
//! which changes nothing for a regular file), must be a regular file, and
//! is read up to a limit.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, ErrorKind};

/// The largest configuration file read: far more than any mbsyncrc or
/// certificate bundle, small enough to read at once.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The bytes of `path`, which must be a regular file of at most `limit`
/// bytes. Anything else is an error of kind `InvalidInput` ("not a regular
/// file") or `InvalidData` (too large), and is never waited for.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    // Looked at before it is opened too: opening some devices does
    // something (a tape rewinds).
    if !std::fs::metadata(path)?.is_file() {
        return Err(not_regular());
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    // And after: the path may have been replaced meanwhile.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {} MiB", limit >> 20),
        )
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read stops at the limit too.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// [`read_regular`] as text (invalid UTF-8 is an `InvalidData` error).
pub fn read_regular_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// An error of [`read_regular`] for the user: `what` and the reason,
/// without the "(os error 2)" that helps nobody. Kind `config` when it is
/// about what the path names (missing, no regular file, too large), which
/// the user fixes in the configuration; `io` when reading it failed.
pub fn error(what: &str, err: &io::Error) -> Error {
    let kind = match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::InvalidInput | io::ErrorKind::InvalidData => {
            ErrorKind::Config
        }
        _ => ErrorKind::Io,
    };
    let text = err.to_string();
    let reason = text.split(" (os error").next().unwrap_or(&text);
    Error::new(kind, format!("{what}: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rc");
        std::fs::write(&path, "IMAPStore x\n").unwrap();
        assert_eq!(read_regular(&path, 100).unwrap(), b"IMAPStore x\n");
        assert_eq!(read_regular_text(&path, 100).unwrap(), "IMAPStore x\n");
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read_regular(&path, 100).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "not a regular file");
        let e = error("Cannot open config file 'fifo'", &err);
        assert_eq!(e.kind, ErrorKind::Config);
        assert_eq!(
            e.message,
            "Cannot open config file 'fifo': not a regular file"
        );
    }

    #[test]
    fn a_device_or_folder_is_refused_and_a_large_file_is_not_read() {
        for path in ["/dev/zero", "/dev/null", "/"] {
            let err = read_regular(Path::new(path), 100).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{path}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, vec![b'x'; 3 << 20]).unwrap();
        let err = read_regular(&path, 2 << 20).unwrap_err();
        assert_eq!(err.to_string(), "larger than 2 MiB");
        assert_eq!(error("x", &err).kind, ErrorKind::Config);
        let missing = read_regular(&dir.path().join("none"), 100).unwrap_err();
        assert_eq!(error("x", &missing).message, "x: No such file or directory");
    }
}
