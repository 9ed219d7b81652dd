//! Bounded reads of `/proc` and `/sys` files and the number parsing the diagnostics share;
//! every failure names the file and the cause.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Most bytes read from a small `/proc` or `/sys` file; a larger one is refused.
pub const SMALL_FILE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is larger than {limit} bytes, which a kernel file of this kind never is")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("{path}: {problem}")]
    Parse { path: PathBuf, problem: String },
}

impl ReadError {
    /// A parse problem in `path`.
    pub fn parse(path: &Path, problem: impl Into<String>) -> Self {
        Self::Parse {
            path: path.to_owned(),
            problem: problem.into(),
        }
    }

    /// Whether the file does not exist (an optional kernel feature).
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads at most `limit` bytes of `path` as text (invalid UTF-8 replaced); more is an error.
pub fn read_capped(path: &Path, limit: usize) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(|source| ReadError::Open {
        path: path.to_owned(),
        source,
    })?;
    let mut buf = Vec::with_capacity(limit.min(8192));
    file.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|source| ReadError::Read {
            path: path.to_owned(),
            source,
        })?;
    if buf.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(match String::from_utf8(buf) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// A small kernel file.
pub fn read_small(path: &Path) -> Result<String, ReadError> {
    read_capped(path, SMALL_FILE)
}

/// A file holding one unsigned number (`pid_max`, `nf_conntrack_count`).
pub fn read_u64(path: &Path) -> Result<u64, ReadError> {
    let text = read_small(path)?;
    parse_u64(path, text.trim(), "the number")
}

/// Parses `text` as an unsigned number; `what` names it in the error.
pub fn parse_u64(path: &Path, text: &str, what: &str) -> Result<u64, ReadError> {
    text.parse::<u64>().map_err(|_| {
        ReadError::parse(
            path,
            format!("{what} is {:?}, not a whole number", shorten(text)),
        )
    })
}

/// Parses `text` as a finite number; `what` names it in the error.
pub fn parse_f64(path: &Path, text: &str, what: &str) -> Result<f64, ReadError> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ReadError::parse(
            path,
            format!("{what} is {:?}, not a number", shorten(text)),
        )),
    }
}

/// At most 40 characters of `s`, for quoting garbage in a reason.
pub fn shorten(s: &str) -> String {
    if s.chars().count() <= 40 {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(40).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        std::fs::write(&p, vec![b'1'; 100]).unwrap();
        let e = read_capped(&p, 10).unwrap_err();
        assert!(e.to_string().contains("larger than 10 bytes"), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()));
        assert_eq!(read_capped(&p, 100).unwrap().len(), 100);
        let e = read_u64(&dir.path().join("missing")).unwrap_err();
        assert!(e.is_missing());
        std::fs::write(&p, b"12x\n").unwrap();
        assert_eq!(
            read_u64(&p).unwrap_err().to_string(),
            format!("{}: the number is \"12x\", not a whole number", p.display())
        );
        std::fs::write(&p, [0xff, 0xfe, b'\n']).unwrap();
        assert!(read_small(&p).is_ok());
        assert!(parse_f64(&p, "NaN", "x").is_err());
        assert_eq!(shorten(&"a".repeat(50)).chars().count(), 41);
    }
}
