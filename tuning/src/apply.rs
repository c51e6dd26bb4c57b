//! `--apply`: carries out the fixes a [`Report`] proposes and reports each
//! action's result.
//!
//! Invariants:
//! - Never panics and never stops early: every write of every fixable,
//!   non-Ok check is attempted and gets its own [`ApplyResult`].
//! - Only existing files are written (no `create`), so a wrong root cannot
//!   litter the filesystem; a missing file is reported as failed.
//! - Permission errors (`EACCES`, `EPERM`, and `EROFS` for a read-only
//!   `/sys` in a container) get [`ApplyOutcome::PermissionDenied`] with a
//!   hint, never a generic failure.
//! - Writes are read back when the fix says how; a value the kernel did not
//!   take is a failure, not a success.
//! - RLIMIT_MEMLOCK changes affect only this process and its children.

use std::collections::BTreeSet;
use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::report::{FileWrite, Fix, Report, Status, Verify};
use crate::sysfs::{parse_cpu_list, read_opt, selected};
use crate::Profile;

/// How one action went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// Done and confirmed.
    Applied,
    /// Not attempted (see the message).
    Skipped,
    /// Refused for lack of privilege.
    PermissionDenied,
    /// Attempted and failed for another reason.
    Failed,
}

/// Result of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Check the action belongs to.
    pub check_id: String,
    /// What was attempted, e.g. `write performance to /sys/.../scaling_governor`.
    pub action: String,
    /// How it went.
    pub outcome: ApplyOutcome,
    /// Details: the error, or what was confirmed.
    pub message: String,
}

/// Applies every fix in `report` whose check is not Ok. `profile` must be
/// the profile the report was made for (fixes are computed per profile);
/// otherwise nothing is changed and one Skipped result says why.
pub fn apply(report: &Report, profile: Profile) -> Vec<ApplyResult> {
    if report.profile != profile {
        return vec![ApplyResult {
            check_id: "*".into(),
            action: format!("apply {profile} profile"),
            outcome: ApplyOutcome::Skipped,
            message: format!("report was made for the {} profile; re-run the checks with {profile}", report.profile),
        }];
    }
    let mut results = Vec::new();
    for check in &report.checks {
        let Some(fix) = &check.fix else { continue };
        if check.status == Status::Ok {
            continue;
        }
        match fix {
            Fix::WriteFiles { writes } => {
                for w in writes {
                    results.push(write_one(&check.id, w));
                }
            }
            Fix::RaiseMemlock { soft, hard } => results.push(raise_memlock(&check.id, *soft, *hard)),
        }
    }
    results
}

fn is_permission(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::PermissionDenied || matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES | libc::EROFS))
}

fn write_one(check_id: &str, w: &FileWrite) -> ApplyResult {
    let action = format!("write {} to {}", w.value, w.path.display());
    let result = |outcome, message: String| ApplyResult {
        check_id: check_id.to_string(),
        action: action.clone(),
        outcome,
        message,
    };
    let attempt = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true) // as `echo v > f`; ignored by sysfs/procfs
        .open(&w.path)
        .and_then(|mut f| f.write_all(format!("{}\n", w.value).as_bytes()));
    if let Err(e) = attempt {
        return if is_permission(&e) {
            result(
                ApplyOutcome::PermissionDenied,
                format!("permission denied ({e}): run `weir tune --apply` as root, outside a read-only container /sys"),
            )
        } else if e.kind() == std::io::ErrorKind::NotFound {
            result(ApplyOutcome::Failed, format!("{} does not exist", w.path.display()))
        } else {
            result(ApplyOutcome::Failed, format!("kernel refused the value: {e}"))
        };
    }
    let back = match read_opt(&w.path) {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => return result(ApplyOutcome::Failed, format!("written, but reading back failed: {e:#}")),
    };
    let ok = match w.verify {
        Verify::None => true,
        Verify::Exact => back.trim() == w.value.trim(),
        Verify::Selected => selected(&back).as_deref() == Some(w.value.trim()),
        Verify::CpuList => {
            let want: Option<BTreeSet<usize>> = parse_cpu_list(&w.value).ok();
            want.is_some() && parse_cpu_list(&back).ok() == want
        }
    };
    if ok {
        result(ApplyOutcome::Applied, "done".into())
    } else {
        result(ApplyOutcome::Failed, format!("kernel kept {:?} after the write", back.trim()))
    }
}

fn raise_memlock(check_id: &str, soft: u64, hard: u64) -> ApplyResult {
    let show = |v: u64| {
        if v == u64::MAX {
            "unlimited".to_string()
        } else {
            crate::memory::bytes(v)
        }
    };
    let action = format!("setrlimit(RLIMIT_MEMLOCK, soft {}, hard {}) for this process", show(soft), show(hard));
    let to_rlim = |v: u64| {
        if v == u64::MAX {
            libc::RLIM_INFINITY
        } else {
            v as libc::rlim_t
        }
    };
    let lim = libc::rlimit {
        rlim_cur: to_rlim(soft),
        rlim_max: to_rlim(hard),
    };
    // SAFETY: `lim` is a valid rlimit for the duration of the call.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    let (outcome, message) = if rc == 0 {
        (
            ApplyOutcome::Applied,
            "done for this process and its children only; persist with LimitMEMLOCK= or limits.conf".to_string(),
        )
    } else {
        let e = std::io::Error::last_os_error();
        if is_permission(&e) {
            (
                ApplyOutcome::PermissionDenied,
                format!("permission denied ({e}): raising the hard limit needs root (CAP_SYS_RESOURCE)"),
            )
        } else {
            (ApplyOutcome::Failed, format!("setrlimit failed: {e}"))
        }
    };
    ApplyResult {
        check_id: check_id.to_string(),
        action,
        outcome,
        message,
    }
}

/// Renders apply results as lines: `[outcome] check: action — message`.
pub fn results_to_text(results: &[ApplyResult]) -> String {
    let mut out = String::new();
    if results.is_empty() {
        out.push_str("nothing to apply\n");
    }
    for r in results {
        let tag = match r.outcome {
            ApplyOutcome::Applied => "APPLIED",
            ApplyOutcome::Skipped => "SKIPPED",
            ApplyOutcome::PermissionDenied => "DENIED",
            ApplyOutcome::Failed => "FAILED",
        };
        out.push_str(&format!("[{tag}] {}: {} — {}\n", r.check_id, r.action, r.message));
    }
    out
}
