//! io_uring: whether rings can be created, and which opcodes the kernel
//! supports (via `IORING_REGISTER_PROBE`, through the `io-uring` crate).
//!
//! Invariants:
//! - [`probe_live`] sets up one tiny ring, probes it and drops it; it never
//!   submits I/O and never panics.
//! - "Required" opcodes are the ones glommio 0.9 submits; without any of
//!   them weir cannot run, so their absence is a Fail. "Optional" ones
//!   (zero-copy send, ftruncate…) only cost a fallback, so a Warn.

use io_uring::opcode;
use serde::{Deserialize, Serialize};

use crate::report::{Check, Status};
use crate::sysfs::Root;

/// Id of the io_uring availability check.
pub const ID_AVAILABLE: &str = "io_uring.available";
/// Id of the io_uring opcode support check.
pub const ID_OPCODES: &str = "io_uring.opcodes";

/// Opcodes glommio needs: name and code.
pub const REQUIRED: &[(&str, u8)] = &[
    ("Nop", opcode::Nop::CODE),
    ("Read", opcode::Read::CODE),
    ("Write", opcode::Write::CODE),
    ("ReadFixed", opcode::ReadFixed::CODE),
    ("WriteFixed", opcode::WriteFixed::CODE),
    ("Fsync", opcode::Fsync::CODE),
    ("OpenAt", opcode::OpenAt::CODE),
    ("Close", opcode::Close::CODE),
    ("Statx", opcode::Statx::CODE),
    ("Fallocate", opcode::Fallocate::CODE),
    ("PollAdd", opcode::PollAdd::CODE),
    ("PollRemove", opcode::PollRemove::CODE),
    ("Timeout", opcode::Timeout::CODE),
    ("TimeoutRemove", opcode::TimeoutRemove::CODE),
    ("LinkTimeout", opcode::LinkTimeout::CODE),
    ("AsyncCancel", opcode::AsyncCancel::CODE),
    ("Accept", opcode::Accept::CODE),
    ("Connect", opcode::Connect::CODE),
    ("Send", opcode::Send::CODE),
    ("Recv", opcode::Recv::CODE),
    ("SendMsg", opcode::SendMsg::CODE),
    ("RecvMsg", opcode::RecvMsg::CODE),
];

/// Opcodes weir can use when present, with a fallback otherwise.
pub const OPTIONAL: &[(&str, u8)] = &[
    ("Readv", opcode::Readv::CODE),
    ("Writev", opcode::Writev::CODE),
    ("SyncFileRange", opcode::SyncFileRange::CODE),
    ("RenameAt", opcode::RenameAt::CODE),
    ("UnlinkAt", opcode::UnlinkAt::CODE),
    ("MkDirAt", opcode::MkDirAt::CODE),
    ("SendZc", opcode::SendZc::CODE),
    ("SendMsgZc", opcode::SendMsgZc::CODE),
    ("RecvMulti", opcode::RecvMulti::CODE),
    ("Ftruncate", opcode::Ftruncate::CODE),
];

/// What probing io_uring found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UringProbe {
    /// A ring was created and probed.
    Probed {
        /// Required opcodes the kernel lacks.
        missing_required: Vec<String>,
        /// Optional opcodes the kernel lacks.
        missing_optional: Vec<String>,
        /// How many of the listed opcodes are supported.
        supported: usize,
    },
    /// A ring was created but the probe was refused (kernel before 5.6).
    ProbeFailed {
        /// The error.
        error: String,
    },
    /// `io_uring_setup` failed.
    SetupFailed {
        /// errno, if the error had one.
        errno: Option<i32>,
        /// The error.
        error: String,
    },
    /// Not probed (tests, or a non-Linux build).
    NotRun,
}

/// Grades a probe from a predicate (`code → supported`).
pub fn grade(is_supported: impl Fn(u8) -> bool) -> UringProbe {
    let missing = |list: &[(&str, u8)]| list.iter().filter(|(_, c)| !is_supported(*c)).map(|(n, _)| n.to_string()).collect::<Vec<_>>();
    let supported = REQUIRED.iter().chain(OPTIONAL).filter(|(_, c)| is_supported(*c)).count();
    UringProbe::Probed {
        missing_required: missing(REQUIRED),
        missing_optional: missing(OPTIONAL),
        supported,
    }
}

/// Creates an 8-entry ring and probes its opcodes.
pub fn probe_live() -> UringProbe {
    let ring = match io_uring::IoUring::new(8) {
        Ok(r) => r,
        Err(e) => {
            return UringProbe::SetupFailed {
                errno: e.raw_os_error(),
                error: format!("io_uring_setup: {e}"),
            }
        }
    };
    let mut probe = io_uring::Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        return UringProbe::ProbeFailed {
            error: format!("IORING_REGISTER_PROBE: {e}"),
        };
    }
    grade(|c| probe.is_supported(c))
}

/// Both io_uring checks, in id order.
pub fn checks(root: &Root, probe: &UringProbe) -> Vec<Check> {
    vec![available(root, probe), opcodes(probe)]
}

fn available(root: &Root, probe: &UringProbe) -> Check {
    const WHY: &str = "weir's executors do all disk and network I/O through io_uring \
        (glommio); without it weir cannot start.";
    let disabled = root.read_trimmed("proc/sys/kernel/io_uring_disabled");
    let disabled_txt = match &disabled {
        Ok(Some(v)) => format!("io_uring_disabled={v}"),
        Ok(None) => "no io_uring_disabled sysctl (kernel before 6.6)".to_string(),
        Err(e) => format!("{e:#}"),
    };
    let knob = match &disabled {
        Ok(Some(v)) => v.parse::<u8>().ok(),
        _ => None,
    };
    let sysctl_todo = "set kernel.io_uring_disabled=0 (or 1 and add weir's user to kernel.io_uring_group)";
    match probe {
        UringProbe::SetupFailed { errno, error } => {
            let todo = match (*errno, knob) {
                (_, Some(2)) => sysctl_todo.to_string(),
                (Some(libc::EPERM), _) | (Some(libc::EACCES), _) => {
                    format!("io_uring is restricted here: {sysctl_todo}; in a container, allow io_uring_setup in the seccomp profile")
                }
                (Some(libc::ENOSYS), _) => "use a kernel built with CONFIG_IO_URING (5.10 or newer recommended)".to_string(),
                (Some(libc::ENOMEM), _) => "raise the memlock limit (see memory.memlock)".to_string(),
                _ => "check dmesg and the kernel config for io_uring".to_string(),
            };
            Check::new(ID_AVAILABLE, Status::Fail, format!("{error}; {disabled_txt}"), WHY, todo)
        }
        UringProbe::NotRun => {
            let status = if knob == Some(2) { Status::Fail } else { Status::Unknown };
            let todo = if knob == Some(2) { sysctl_todo } else { "nothing" };
            Check::new(ID_AVAILABLE, status, format!("not probed; {disabled_txt}"), WHY, todo)
        }
        UringProbe::Probed { .. } | UringProbe::ProbeFailed { .. } => {
            if knob == Some(1) {
                Check::new(
                    ID_AVAILABLE,
                    Status::Ok,
                    format!("ring created; {disabled_txt} (only privileged users and kernel.io_uring_group)"),
                    WHY,
                    "make sure the user weir runs as is privileged or in kernel.io_uring_group",
                )
            } else {
                Check::new(ID_AVAILABLE, Status::Ok, format!("ring created; {disabled_txt}"), WHY, "nothing")
            }
        }
    }
}

fn opcodes(probe: &UringProbe) -> Check {
    const WHY: &str = "Each operation weir submits needs kernel support: a missing core \
        opcode fails at run time, a missing optional one (zero-copy send, ftruncate) \
        falls back to a slower path.";
    match probe {
        UringProbe::Probed {
            missing_required,
            missing_optional,
            supported,
        } => {
            let total = REQUIRED.len() + OPTIONAL.len();
            let mut found = format!("{supported}/{total} checked opcodes supported");
            if !missing_required.is_empty() {
                found.push_str(&format!("; missing required: {}", missing_required.join(", ")));
            }
            if !missing_optional.is_empty() {
                found.push_str(&format!("; missing optional: {}", missing_optional.join(", ")));
            }
            if !missing_required.is_empty() {
                Check::new(
                    ID_OPCODES,
                    Status::Fail,
                    found,
                    WHY,
                    "upgrade the kernel (5.19 or newer has every required opcode)",
                )
            } else if !missing_optional.is_empty() {
                Check::new(
                    ID_OPCODES,
                    Status::Warn,
                    found,
                    WHY,
                    "upgrade to kernel 6.9+ for zero-copy send and ftruncate; weir falls back meanwhile",
                )
            } else {
                Check::new(ID_OPCODES, Status::Ok, found, WHY, "nothing")
            }
        }
        UringProbe::ProbeFailed { error } => Check::new(
            ID_OPCODES,
            Status::Warn,
            error.clone(),
            WHY,
            "kernel too old to probe (before 5.6): upgrade to 5.10 or newer",
        ),
        UringProbe::SetupFailed { .. } => Check::new(ID_OPCODES, Status::Unknown, "no ring could be created", WHY, "see io_uring.available"),
        UringProbe::NotRun => Check::new(ID_OPCODES, Status::Unknown, "not probed", WHY, "nothing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grading_splits_required_and_optional() {
        let no_zc = grade(|c| c != opcode::SendZc::CODE && c != opcode::ReadFixed::CODE);
        match &no_zc {
            UringProbe::Probed {
                missing_required,
                missing_optional,
                ..
            } => {
                assert_eq!(missing_required, &["ReadFixed"]);
                assert_eq!(missing_optional, &["SendZc"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(opcodes(&no_zc).status, Status::Fail);
        assert_eq!(opcodes(&grade(|c| c != opcode::SendZc::CODE)).status, Status::Warn);
        assert_eq!(opcodes(&grade(|_| true)).status, Status::Ok);
    }
}
