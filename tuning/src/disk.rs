//! Disk checks: the block I/O scheduler of the state directory's device and
//! the filesystem of the state directory.
//!
//! Invariants:
//! - The state directory may not exist yet: its nearest existing ancestor
//!   is examined instead, and the report says so.
//! - The device is found from `st_dev` through `/sys/dev/block/MAJ:MIN`
//!   (partitions resolve to their parent disk). When the directory is on no
//!   block device (tmpfs, overlay), every physical disk in `/sys/block` is
//!   graded instead; loop, ram and zram devices are never graded.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::report::{Check, Status};
use crate::sysfs::{selected, Root};
use crate::Host;

/// Id of the disk scheduler check.
pub const ID_SCHEDULER: &str = "disk.scheduler";
/// Id of the state directory filesystem check.
pub const ID_STATE_FS: &str = "disk.state_fs";

/// `statfs`/`stat` facts about the state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFs {
    /// The path actually examined (the state dir or its nearest ancestor).
    pub checked: PathBuf,
    /// Whether that is the state directory itself.
    pub exists: bool,
    /// `statfs.f_type`.
    pub magic: u64,
    /// Major number of `st_dev`.
    pub dev_major: u32,
    /// Minor number of `st_dev`.
    pub dev_minor: u32,
}

/// `statfs` magic numbers of filesystems weir knows about.
pub mod magic {
    /// ext2, ext3 and ext4 share one magic.
    pub const EXT4: u64 = 0xEF53;
    /// XFS.
    pub const XFS: u64 = 0x5846_5342;
    /// tmpfs.
    pub const TMPFS: u64 = 0x0102_1994;
    /// overlayfs.
    pub const OVERLAY: u64 = 0x794C_7630;
    /// btrfs.
    pub const BTRFS: u64 = 0x9123_683E;
    /// ZFS.
    pub const ZFS: u64 = 0x2FC1_2FC1;
    /// NFS.
    pub const NFS: u64 = 0x6969;
    /// FUSE.
    pub const FUSE: u64 = 0x6573_5546;
    /// F2FS.
    pub const F2FS: u64 = 0xF2F5_2010;
    /// ramfs.
    pub const RAMFS: u64 = 0x8584_58F6;
}

/// A name for a `statfs` magic.
pub fn fs_name(m: u64) -> &'static str {
    match m {
        magic::EXT4 => "ext4 (ext2/3/4)",
        magic::XFS => "xfs",
        magic::TMPFS => "tmpfs",
        magic::OVERLAY => "overlayfs",
        magic::BTRFS => "btrfs",
        magic::ZFS => "zfs",
        magic::NFS => "nfs",
        magic::FUSE => "fuse",
        magic::F2FS => "f2fs",
        magic::RAMFS => "ramfs",
        _ => "unknown",
    }
}

/// `statfs` and `stat` of `dir`, or of its nearest existing ancestor.
pub fn stat_state_dir(dir: &Path) -> Result<StateFs> {
    let abs = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    let checked = abs
        .ancestors()
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let exists = checked == abs;
    let c = std::ffi::CString::new(checked.as_os_str().as_encoded_bytes()).with_context(|| format!("path {} has a NUL byte", checked.display()))?;
    // SAFETY: zeroed statfs/stat are valid out-parameters; `c` is a valid
    // NUL-terminated path for the duration of the calls.
    let mut sfs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut sfs) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statfs {}", checked.display()));
    }
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("stat {}", checked.display()));
    }
    Ok(StateFs {
        checked,
        exists,
        // f_type is signed on some targets; the magic is its bit pattern.
        #[allow(clippy::unnecessary_cast)]
        magic: (sfs.f_type as u64) & 0xFFFF_FFFF,
        dev_major: libc::major(st.st_dev),
        dev_minor: libc::minor(st.st_dev),
    })
}

/// Both disk checks, in id order.
pub fn checks(root: &Root, host: &Host) -> Vec<Check> {
    vec![scheduler(root, host.state_fs.as_ref().ok()), state_fs(host)]
}

/// Sysfs directory (relative to nothing: a real path) of the whole disk
/// behind `major:minor`, if it has a request queue.
fn disk_dir(root: &Root, major: u32, minor: u32) -> Option<PathBuf> {
    if major == 0 {
        return None;
    }
    let link = root.path(format!("sys/dev/block/{major}:{minor}"));
    let dir = std::fs::canonicalize(&link).ok()?;
    if dir.join("queue/scheduler").exists() {
        return Some(dir);
    }
    let parent = dir.parent()?;
    parent.join("queue/scheduler").exists().then(|| parent.to_path_buf())
}

fn grade_scheduler(sched: &str, rotational: bool) -> Status {
    match (sched, rotational) {
        ("none" | "mq-deadline" | "kyber", false) => Status::Ok,
        ("mq-deadline" | "bfq", true) => Status::Ok,
        _ => Status::Warn,
    }
}

fn scheduler(root: &Root, fs: Option<&StateFs>) -> Check {
    const WHY: &str = "NVMe and SSDs do their own queueing: `none` or `mq-deadline` add the \
        least per-I/O CPU and latency, while bfq spends CPU on fairness weir does not need. \
        Spinning disks want mq-deadline to order requests.";
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut scope = "state dir's disk";
    if let Some(d) = fs.and_then(|f| disk_dir(root, f.dev_major, f.dev_minor)) {
        dirs.push(d);
    } else {
        scope = "all disks (state dir is on no block device)";
        match root.list("sys/block") {
            Ok(Some(names)) => dirs.extend(
                names
                    .iter()
                    .filter(|n| !["loop", "ram", "zram", "nbd"].iter().any(|p| n.starts_with(p)))
                    .map(|n| root.path(format!("sys/block/{n}"))),
            ),
            Ok(None) => {}
            Err(e) => return Check::new(ID_SCHEDULER, Status::Unknown, format!("{e:#}"), WHY, "check that /sys is mounted"),
        }
    }
    let mut status = Status::Ok;
    let mut found = Vec::new();
    let mut todo = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned());
        let sched = crate::sysfs::read_opt(&dir.join("queue/scheduler")).ok().flatten();
        let Some(sched) = sched.as_deref().and_then(selected) else {
            continue;
        };
        let rotational = crate::sysfs::read_opt(&dir.join("queue/rotational"))
            .ok()
            .flatten()
            .is_some_and(|r| r.trim() == "1");
        let kind = if rotational { "rotational" } else { "ssd/nvme" };
        found.push(format!("{name}: {sched} ({kind})"));
        if grade_scheduler(&sched, rotational) == Status::Warn {
            status = Status::Warn;
            let want = if rotational { "mq-deadline" } else { "none" };
            todo.push(format!("echo {want} > /sys/block/{name}/queue/scheduler (persist with a udev rule)"));
        }
    }
    if found.is_empty() {
        return Check::new(ID_SCHEDULER, Status::Unknown, "no block device with a scheduler found", WHY, "nothing");
    }
    let found = format!("{scope}: {}", found.join("; "));
    let todo = if todo.is_empty() { "nothing".to_string() } else { todo.join("; ") };
    Check::new(ID_SCHEDULER, status, found, WHY, todo)
}

fn state_fs(host: &Host) -> Check {
    const WHY: &str = "weir's state store writes with O_DIRECT through io_uring; ext4 and XFS \
        do that well. tmpfs and overlay either lack direct I/O or lose state on restart; \
        btrfs/ZFS copy-on-write adds write amplification and latency.";
    let fs = match &host.state_fs {
        Ok(f) => f,
        Err(e) => return Check::new(ID_STATE_FS, Status::Unknown, e.clone(), WHY, "create the state directory, then re-run"),
    };
    let mut found = format!(
        "{} on {} (magic {:#x}, dev {}:{})",
        fs.checked.display(),
        fs_name(fs.magic),
        fs.magic,
        fs.dev_major,
        fs.dev_minor
    );
    if !fs.exists {
        found.push_str("; state dir does not exist yet, checked nearest ancestor");
    }
    let move_it = "put the state directory on an ext4 or XFS filesystem on a local SSD/NVMe";
    match fs.magic {
        magic::EXT4 | magic::XFS => Check::new(ID_STATE_FS, Status::Ok, found, WHY, "nothing"),
        magic::TMPFS | magic::RAMFS => Check::new(
            ID_STATE_FS,
            Status::Warn,
            found,
            WHY,
            format!("{move_it}; on tmpfs state is lost at reboot (fine for benchmarks only)"),
        ),
        magic::OVERLAY => Check::new(
            ID_STATE_FS,
            Status::Warn,
            found,
            WHY,
            format!("{move_it}; in a container, mount a volume for the state directory"),
        ),
        magic::NFS | magic::FUSE => Check::new(
            ID_STATE_FS,
            Status::Warn,
            found,
            WHY,
            format!("{move_it}; network and FUSE filesystems add latency and weaken durability"),
        ),
        _ => Check::new(ID_STATE_FS, Status::Warn, found, WHY, move_it),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_grades() {
        assert_eq!(grade_scheduler("none", false), Status::Ok);
        assert_eq!(grade_scheduler("mq-deadline", false), Status::Ok);
        assert_eq!(grade_scheduler("bfq", false), Status::Warn);
        assert_eq!(grade_scheduler("none", true), Status::Warn);
        assert_eq!(grade_scheduler("mq-deadline", true), Status::Ok);
    }

    #[test]
    fn stat_missing_dir_uses_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let fs = stat_state_dir(&dir.path().join("a/b/c")).unwrap();
        assert!(!fs.exists);
        assert_eq!(fs.checked, dir.path());
        assert!(stat_state_dir(dir.path()).unwrap().exists);
    }
}
