//! `pbak btrfs doctor`: does each Btrfs subvolume mount follow the storage presets of
//! DESIGN.md? The presets are the table [`PRESETS`] (plus [`SSD_OPTIONS`]); the code below only
//! interprets it. Mount options come from `/proc/self/mountinfo` (per-mount and superblock
//! options together), No_COW from the inode flags, SSD-ness from the device's
//! `queue/rotational` in sysfs.
#![deny(unsafe_code)]

use super::{is_nocow, BtrfsError, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What a kind of subvolume needs. The first preset one of whose `paths` (globs) matches the
/// path or one of its ancestors applies; the last one matches everything.
pub struct Preset {
    pub name: &'static str,
    pub paths: &'static [&'static str],
    /// Mount options that must be present (`compress=X` is also met by `compress-force=X`).
    pub options: &'static [&'static str],
    /// Data must not be copy-on-write: `nodatacow` mount option or `chattr +C` on the directory.
    pub nodatacow: bool,
}

const DB_WHY: &str = "copy-on-write hurts database files: every small in-place page update \
    writes a new extent, so a busy table file fragments into hundreds of thousands of extents, \
    reads turn random and each fsync rewrites checksums and metadata; the database keeps its own \
    journal (WAL/AOF), so Btrfs's data COW buys nothing. Mount with nodatacow, or on an empty \
    directory run `chattr +C DIR` (new files inherit it; copy existing files in again)";
const CONTAINER_WHY: &str = "container images and volumes hold databases and VM-like images \
    that are rewritten in place, which fragments badly under copy-on-write; mount with \
    nodatacow or `chattr +C` the empty directory";

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "database",
        paths: &[
            "/var/lib/postgresql",
            "/var/lib/pgsql",
            "/var/lib/redis",
            "/var/lib/mysql",
        ],
        options: &["noatime"],
        nodatacow: true,
    },
    Preset {
        name: "containers",
        paths: &[
            "/var/lib/docker",
            "/var/lib/containers",
            "/home/*/.local/share/containers",
        ],
        options: &["noatime"],
        nodatacow: true,
    },
    Preset {
        name: "cache",
        paths: &["/var/cache", "/home/*/.cache", "/root/.cache"],
        options: &["noatime", "compress=zstd:1"],
        nodatacow: false,
    },
    Preset {
        name: "general",
        paths: &["/"],
        options: &["noatime", "compress=zstd:3", "space_cache=v2"],
        nodatacow: false,
    },
];

/// Extra options for filesystems on non-rotational devices.
pub const SSD_OPTIONS: &[&str] = &["ssd", "discard=async"];

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    /// Path of the mounted subvolume inside its filesystem.
    pub root: String,
    pub fs_type: String,
    pub source: String,
    /// Per-mount and superblock options together.
    pub options: Vec<String>,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok());
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            let opts = pre.get(5)?.split(',').chain(post.get(2)?.split(','));
            Some(Mount {
                mount_point: PathBuf::from(unescape(pre.get(4)?)),
                root: unescape(pre.get(3)?),
                fs_type: post.first()?.to_string(),
                source: unescape(post.get(1)?),
                options: opts.map(String::from).collect(),
            })
        })
        .collect()
}

/// The preset for `path`, by the table.
pub fn preset_for(path: &Path) -> &'static Preset {
    PRESETS
        .iter()
        .find(|p| {
            p.paths.iter().any(|g| {
                let pat = glob::Pattern::new(g).expect("preset globs are valid");
                path.ancestors().any(|a| pat.matches_path(a))
            })
        })
        .unwrap_or(&PRESETS[PRESETS.len() - 1])
}

/// Whether the block device behind `source` (e.g. `/dev/nvme0n1p2`) is non-rotational;
/// `None` when sysfs does not say.
pub fn is_ssd(source: &str) -> Option<bool> {
    let dev = std::fs::canonicalize(source).ok()?;
    let sys = std::fs::canonicalize(Path::new("/sys/class/block").join(dev.file_name()?)).ok()?;
    // A partition's queue/ is its parent disk's.
    [sys.join("queue/rotational"), sys.parent()?.join("queue/rotational")]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|v| v.trim() == "0")
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    /// Empty when ok.
    pub message: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub path: PathBuf,
    pub mount_point: PathBuf,
    pub subvolume: String,
    pub device: String,
    pub preset: &'static str,
    pub ssd: Option<bool>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }
}

fn has_option(options: &[String], want: &str) -> bool {
    let forced = want.strip_prefix("compress=").map(|v| format!("compress-force={v}"));
    options.iter().any(|o| o == want || Some(o) == forced.as_ref())
}

fn check(path: &Path, mount: &Mount, preset: &'static Preset) -> Result<Report> {
    let ssd = is_ssd(&mount.source);
    let ssd_opts = if ssd == Some(true) { SSD_OPTIONS } else { &[] };
    let mut findings: Vec<Finding> = preset
        .options
        .iter()
        .chain(ssd_opts)
        .map(|&o| {
            let ok = has_option(&mount.options, o);
            let key = o.split('=').next().unwrap_or(o);
            let have: Vec<&str> = mount
                .options
                .iter()
                .filter(|x| x.starts_with(key))
                .map(String::as_str)
                .collect();
            let have = if have.is_empty() { "none".into() } else { have.join(",") };
            Finding {
                check: o.to_string(),
                ok,
                message: match ok {
                    true => String::new(),
                    false => format!(
                        "mount option {o} missing (now: {have}); add it to the options of {} in /etc/fstab",
                        mount.mount_point.display()
                    ),
                },
            }
        })
        .collect();
    if preset.nodatacow {
        let ok = has_option(&mount.options, "nodatacow") || is_nocow(path)?;
        let why = if preset.name == "database" {
            DB_WHY
        } else {
            CONTAINER_WHY
        };
        findings.push(Finding {
            check: "nodatacow".into(),
            ok,
            message: if ok { String::new() } else { why.into() },
        });
    }
    Ok(Report {
        path: path.to_path_buf(),
        mount_point: mount.mount_point.clone(),
        subvolume: mount.root.clone(),
        device: mount.source.clone(),
        preset: preset.name,
        ssd,
        findings,
    })
}

/// Reports for `paths`, or for every Btrfs mount when empty. `preset` forces one by name.
pub fn doctor(paths: &[PathBuf], preset: Option<&str>) -> Result<Vec<Report>> {
    let forced = match preset {
        Some(n) => Some(
            PRESETS
                .iter()
                .find(|p| p.name == n)
                .ok_or_else(|| BtrfsError::UnknownPreset {
                    name: n.into(),
                    known: PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
                })?,
        ),
        None => None,
    };
    let info = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(info).map_err(|e| super::err("read", info, e))?;
    let mounts: Vec<Mount> = parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.fs_type == "btrfs")
        .collect();
    let targets: Vec<(PathBuf, &Mount)> = if paths.is_empty() {
        // Later lines shadow earlier mounts on the same point.
        let mut seen = std::collections::HashSet::new();
        let mut t: Vec<_> = mounts
            .iter()
            .rev()
            .filter(|m| seen.insert(m.mount_point.clone()))
            .map(|m| (m.mount_point.clone(), m))
            .collect();
        t.reverse();
        t
    } else {
        paths
            .iter()
            .map(|p| {
                let abs = std::fs::canonicalize(p).map_err(|e| super::err("resolve", p, e))?;
                drop(super::open_btrfs(&abs, false)?);
                let m = mounts
                    .iter()
                    .rev()
                    .filter(|m| abs.starts_with(&m.mount_point))
                    .max_by_key(|m| m.mount_point.as_os_str().len())
                    .ok_or_else(|| super::err("find the mount of", &abs, std::io::ErrorKind::NotFound.into()))?;
                Ok((abs, m))
            })
            .collect::<Result<_>>()?
    };
    targets
        .into_iter()
        .map(|(p, m)| check(&p, m, forced.unwrap_or_else(|| preset_for(&p))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_and_escapes() {
        let text = "29 1 0:26 /@ / rw,noatime shared:1 - btrfs /dev/nvme0n1p2 rw,compress=zstd:3,ssd,space_cache=v2,subvolid=256,subvol=/@\n\
                    30 29 0:27 /@home /home\\040x rw,relatime shared:2 - btrfs /dev/nvme0n1p2 rw,ssd\n\
                    garbage\n\
                    31 29 0:5 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].mount_point, PathBuf::from("/home x"));
        assert_eq!(m[1].root, "/@home");
        assert!(has_option(&m[0].options, "noatime") && has_option(&m[0].options, "compress=zstd:3"));
        assert!(!has_option(&m[1].options, "noatime"));
        assert!(has_option(&["compress-force=zstd:1".into()], "compress=zstd:1"));
        assert_eq!(m[2].fs_type, "proc");
    }

    #[test]
    fn presets_by_path() {
        let name = |p: &str| preset_for(Path::new(p)).name;
        assert_eq!(name("/var/lib/postgresql/16/main"), "database");
        assert_eq!(name("/var/lib/redis"), "database");
        assert_eq!(name("/var/lib/docker"), "containers");
        assert_eq!(name("/home/ann/.cache"), "cache");
        assert_eq!(name("/home/ann/.cache/x"), "cache");
        assert_eq!(name("/home/ann"), "general");
        assert_eq!(name("/"), "general");
        assert_eq!(PRESETS.last().unwrap().paths, &["/"]);
    }
}
