//! Reports on stdout. A reader that closes the pipe early (`dht bench ... | head -3`) is
//! not an error of the command: the rest of its output is dropped, and it still ends with
//! its own exit code (`dht check`'s verdict, a node's graceful departure). Without this,
//! a write to the closed pipe panicked (`println!`) or ended the command with an error.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

/// Write `text` to stdout and flush it; a failure other than a closed pipe is reported
/// on stderr.
pub fn write(text: &str) {
    let mut out = std::io::stdout().lock();
    let result = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    if let Err(err) = result {
        if err.kind() != ErrorKind::BrokenPipe {
            let _ = writeln!(std::io::stderr(), "cannot write to stdout: {err}");
        }
    }
}

/// [`write`] `text` and a newline.
pub fn line(text: impl Display) {
    write(&format!("{text}\n"));
}
