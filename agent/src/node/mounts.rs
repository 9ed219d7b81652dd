//! The host's mount table from `<proc>/1/mountinfo` (the host's init mount namespace; falls
//! back to `<proc>/self/mountinfo`), shared by `node/disk` and `node/readonly-fs`.

use std::path::{Path, PathBuf};

use super::HostPaths;
use super::read::{ReadError, read_capped};

/// A mount table larger than this is refused (a node with tens of thousands of mounts).
pub const MOUNTINFO_LIMIT: usize = 8 * 1024 * 1024;

/// One line of mountinfo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// `major:minor` of the filesystem's device: the same for every bind mount of it.
    pub device: String,
    /// Where it is mounted, as the host sees it.
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// Per-mount options (`rw`, `ro`, `nosuid`, ...).
    pub mount_options: Vec<String>,
    /// Superblock options; `ro` here means the whole filesystem is read-only.
    pub super_options: Vec<String>,
}

impl Mount {
    /// Read-only as a mount or as a whole filesystem.
    pub fn read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro") || self.super_options.iter().any(|o| o == "ro")
    }

    /// Whether `ignore` (types; a trailing `*` is a prefix) leaves this mount alone. `overlay`
    /// at `/` is the root filesystem of a container host and always counts.
    pub fn ignored_by(&self, ignore: &[String]) -> bool {
        if self.fs_type == "overlay" && self.mount_point == Path::new("/") {
            return false;
        }
        ignore.iter().any(|t| match t.strip_suffix('*') {
            Some(prefix) => self.fs_type.starts_with(prefix),
            None => *t == self.fs_type,
        })
    }
}

/// Reads the mount table; the error names both files tried.
pub fn read(paths: &HostPaths) -> Result<(PathBuf, Vec<Mount>), ReadError> {
    let first = paths.proc("1/mountinfo");
    let text = match read_capped(&first, MOUNTINFO_LIMIT) {
        Ok(t) => t,
        Err(e1) => {
            let second = paths.proc("self/mountinfo");
            match read_capped(&second, MOUNTINFO_LIMIT) {
                Ok(t) => return parse(&second, &t).map(|m| (second, m)),
                Err(e2) => return Err(ReadError::parse(&first, format!("{e1}; and {e2}"))),
            }
        }
    };
    parse(&first, &text).map(|m| (first, m))
}

/// Parses mountinfo text. A line that is not mountinfo makes the whole table an error (it is
/// not a mount table), naming the line.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Mount>, ReadError> {
    let mut mounts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || {
            ReadError::parse(
                path,
                format!(
                    "line {} is not a mountinfo line: {:?}",
                    i + 1,
                    super::read::shorten(line)
                ),
            )
        };
        let (left, right) = line.split_once(" - ").ok_or_else(bad)?;
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 || !l[2].contains(':') {
            return Err(bad());
        }
        mounts.push(Mount {
            device: l[2].to_owned(),
            mount_point: PathBuf::from(unescape(l[4])),
            mount_options: l[5].split(',').map(str::to_owned).collect(),
            fs_type: r[0].to_owned(),
            source: unescape(r[1]),
            super_options: r[2].split(',').map(str::to_owned).collect(),
        });
    }
    if mounts.is_empty() {
        return Err(ReadError::parse(path, "no mounts listed"));
    }
    Ok(mounts)
}

/// mountinfo escapes space, tab, newline and backslash as `\040`-style octal.
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount a host path lives on: the longest mount point that is a prefix of it (the last
/// one mounted wins when stacked).
pub fn containing<'a>(mounts: &'a [Mount], host_path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if host_path.starts_with(&m.mount_point)
            && best.is_none_or(|b| {
                m.mount_point.components().count() >= b.mount_point.components().count()
            })
        {
            best = Some(m);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_with_optional_fields_and_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
                    22 27 0:21 / /proc rw,relatime - proc proc rw\n";
        let m = parse(Path::new("mi"), text).unwrap();
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt two"));
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[0].device, "98:0");
        assert!(!m[0].read_only());
        assert!(m[1].ignored_by(&["proc".into()]));
        let e = parse(Path::new("mi"), "garbage\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "mi: line 1 is not a mountinfo line: \"garbage\""
        );
        assert!(parse(Path::new("mi"), "\n").is_err());
    }

    #[test]
    fn finds_the_containing_mount() {
        let text = "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:2 / /var rw - xfs /dev/sda2 ro\n";
        let m = parse(Path::new("mi"), text).unwrap();
        assert_eq!(containing(&m, Path::new("/var/log")).unwrap().device, "8:2");
        assert_eq!(
            containing(&m, Path::new("/variable")).unwrap().device,
            "8:1"
        );
        assert!(containing(&m, Path::new("/var")).unwrap().read_only());
    }
}
