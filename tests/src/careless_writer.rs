//! A careless writer, as `(sleep 0.3; cat src) > file` writes: the file is truncated, then
//! written in two halves with pauses between. Shared by the binary's abuse tests and the
//! end-to-end tests (included by path there, as the two crates cannot depend on each other).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// Rewrites `path` with `content` the slow, plain way: truncate, wait, half, wait, the rest.
pub fn rewrite_slowly(path: &Path, content: &str) {
    let mut file = std::fs::File::create(path).expect("truncate");
    std::thread::sleep(Duration::from_millis(300));
    let (first, rest) = content.split_at(content.len() / 2);
    file.write_all(first.as_bytes()).expect("first half");
    file.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    file.write_all(rest.as_bytes()).expect("second half");
}
