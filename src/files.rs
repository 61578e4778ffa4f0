//! Settings files (a config, a token file, a CA bundle) read whole, within a size limit.

use std::io::Read;
use std::path::Path;

/// The bytes of the file at `path`, if it holds at most `limit`: a settings file (a config, a
/// token, a CA bundle) read without trusting the path to name a small file (`/dev/zero`, a
/// log, a disk image is refused, not read until the memory runs out).
pub fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// The text of the file at `path`, if it holds at most `limit` bytes of UTF-8: a settings
/// file (a config, a token) read without trusting the path to name a small file.
pub fn read_small_text(path: &Path, limit: u64) -> Result<String, String> {
    let bytes = read_small(path, limit)?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
}
