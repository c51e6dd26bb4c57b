//! Memory checks: the locked-memory limit io_uring buffers need, transparent
//! huge pages, swappiness.
//!
//! Invariants:
//! - The memlock requirement is derived from glommio 0.9's behaviour: each
//!   executor preallocates `io_memory` (10 MiB by default) and registers it
//!   with each of its three rings, and an executor refuses to start when the
//!   soft limit is under 512 KiB. Without `CAP_IPC_LOCK` each registration
//!   is charged against `RLIMIT_MEMLOCK`, so an executor needs 3 × io_memory.
//! - Limits are taken from [`Host`], never read from the sysfs root, so
//!   tests control them.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cpu::CorePlan;
use crate::report::{Check, FileWrite, Fix, Status, Verify};
use crate::sysfs::{selected, Root};
use crate::{Host, Profile};

/// Id of the locked-memory limit check.
pub const ID_MEMLOCK: &str = "memory.memlock";
/// Id of the transparent huge pages check.
pub const ID_THP: &str = "memory.thp";
/// Id of the swappiness check.
pub const ID_SWAPPINESS: &str = "memory.swappiness";

/// glommio's default per-executor I/O memory.
pub const DEFAULT_IO_MEMORY: u64 = 10 << 20;
/// Below this soft limit glommio refuses to start an executor.
pub const GLOMMIO_MIN_MEMLOCK: u64 = 512 << 10;
/// Rings per glommio executor that the I/O memory is registered with.
pub const RINGS_PER_EXECUTOR: u64 = 3;
const MIB: u64 = 1 << 20;
const IO_MEMORY_ALIGN: u64 = 64 << 10;

/// `RLIMIT_MEMLOCK`; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memlock {
    /// Soft (enforced) limit in bytes.
    pub soft: Option<u64>,
    /// Hard limit in bytes (ceiling for the soft limit without privilege).
    pub hard: Option<u64>,
}

/// Reads this process's `RLIMIT_MEMLOCK`.
pub fn current_memlock() -> Result<Memlock> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_MEMLOCK)");
    }
    let conv = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok(Memlock {
        soft: conv(lim.rlim_cur),
        hard: conv(lim.rlim_max),
    })
}

/// Whether this process has `CAP_IPC_LOCK` in its effective set (from
/// `/proc/self/status`); `None` if that cannot be read.
pub fn has_cap_ipc_lock() -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    const CAP_IPC_LOCK: u32 = 14;
    Some(caps & (1 << CAP_IPC_LOCK) != 0)
}

/// `MemTotal` and `SwapTotal` from `/proc/meminfo`, in bytes.
pub fn meminfo(root: &Root) -> (Option<u64>, Option<u64>) {
    let Ok(Some(text)) = root.read("proc/meminfo") else {
        return (None, None);
    };
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    (field("MemTotal:"), field("SwapTotal:"))
}

/// Human-readable byte count (`10 MiB`, `512 KiB`).
pub fn bytes(n: u64) -> String {
    const GIB: u64 = 1 << 30;
    let scaled = |unit: u64, name: &str| {
        if n.is_multiple_of(unit) {
            format!("{} {name}", n / unit)
        } else {
            format!("{:.1} {name}", n as f64 / unit as f64)
        }
    };
    if n >= GIB {
        scaled(GIB, "GiB")
    } else if n >= MIB {
        scaled(MIB, "MiB")
    } else {
        format!("{} KiB", n / 1024)
    }
}

fn limit(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_string(), bytes)
}

/// Per-executor io_memory suggested for the edge profile: about 1% of RAM
/// split over the rings and executors, between 64 KiB and the default.
pub fn edge_io_memory(mem_total: Option<u64>, executors: u64) -> u64 {
    let Some(mem) = mem_total else {
        return 2 * MIB;
    };
    let budget = mem / 100 / (RINGS_PER_EXECUTOR * executors.max(1));
    (budget / IO_MEMORY_ALIGN * IO_MEMORY_ALIGN).clamp(IO_MEMORY_ALIGN, DEFAULT_IO_MEMORY)
}

/// All memory checks, in id order.
pub fn checks(root: &Root, profile: Profile, plan: &CorePlan, host: &Host) -> Vec<Check> {
    let (mem_total, swap_total) = meminfo(root);
    vec![
        memlock(profile, plan, host, mem_total),
        thp(root, profile),
        swappiness(root, profile, swap_total),
    ]
}

fn memlock(profile: Profile, plan: &CorePlan, host: &Host, mem_total: Option<u64>) -> Check {
    const WHY: &str = "glommio registers each executor's I/O buffers with io_uring, which \
        locks them in memory and charges RLIMIT_MEMLOCK; under 512 KiB executors do not \
        start, and below the full amount registration is skipped and storage I/O falls \
        back to slower unregistered buffers.";
    let lim = match &host.memlock {
        Ok(l) => *l,
        Err(e) => return Check::new(ID_MEMLOCK, Status::Unknown, e.clone(), WHY, "check `ulimit -l`"),
    };
    let executors = plan.data.len().max(1) as u64;
    let io_memory = if profile == Profile::Edge {
        edge_io_memory(mem_total, executors)
    } else {
        DEFAULT_IO_MEMORY
    };
    let needed = executors * RINGS_PER_EXECUTOR * io_memory;
    let mut found = format!(
        "soft {}, hard {}; {executors} executor(s) × {RINGS_PER_EXECUTOR} rings × io_memory {} = {} needed",
        limit(lim.soft),
        limit(lim.hard),
        bytes(io_memory),
        bytes(needed)
    );
    if let Some(mem) = mem_total {
        found.push_str(&format!(", RAM {}", bytes(mem)));
    }
    let needed_mib = needed.div_ceil(MIB);
    let persist = format!(
        "make it permanent with LimitMEMLOCK={needed_mib}M in the systemd unit, or `<user> - memlock {}` (KiB) in /etc/security/limits.conf",
        needed_mib * 1024
    );
    let edge_hint = |soft: u64| {
        let fit = (soft / (RINGS_PER_EXECUTOR * executors)) / IO_MEMORY_ALIGN * IO_MEMORY_ALIGN;
        format!(
            "set io_memory to {} per executor (fits the current limit) or raise memlock to {}",
            bytes(fit.max(IO_MEMORY_ALIGN)),
            bytes(needed)
        )
    };
    let fix = Fix::RaiseMemlock {
        soft: needed,
        hard: lim.hard.map_or(u64::MAX, |h| h.max(needed)),
    };
    let Some(soft) = lim.soft else {
        let todo = if profile == Profile::Edge {
            format!("nothing; on a small box set io_memory to {} per executor", bytes(io_memory))
        } else {
            "nothing".into()
        };
        return Check::new(ID_MEMLOCK, Status::Ok, found, WHY, todo);
    };
    if soft < GLOMMIO_MIN_MEMLOCK {
        return Check::new(
            ID_MEMLOCK,
            Status::Fail,
            found,
            WHY,
            format!(
                "raise the memlock limit to at least {} (glommio's minimum is 512 KiB); {persist}",
                bytes(needed)
            ),
        )
        .with_fix(fix);
    }
    if soft >= needed {
        return Check::new(ID_MEMLOCK, Status::Ok, found, WHY, "nothing");
    }
    if host.cap_ipc_lock == Some(true) {
        found.push_str("; this process has CAP_IPC_LOCK, so the limit is not charged");
        return Check::new(
            ID_MEMLOCK,
            Status::Ok,
            found,
            WHY,
            format!(
                "nothing while weir runs with CAP_IPC_LOCK (e.g. as root); without it, raise memlock to {}",
                bytes(needed)
            ),
        );
    }
    let todo = if profile == Profile::Edge {
        format!("{}; {persist}", edge_hint(soft))
    } else {
        format!("raise the memlock limit to at least {}; {persist}", bytes(needed))
    };
    Check::new(ID_MEMLOCK, Status::Warn, found, WHY, todo).with_fix(fix)
}

fn thp(root: &Root, profile: Profile) -> Check {
    const WHY: &str = "With THP `always` the kernel backs any large anonymous mapping with \
        huge pages and khugepaged compacts memory in the background: multi-millisecond \
        stalls and memory bloat. `madvise` gives huge pages only to code that asks.";
    let dir = "sys/kernel/mm/transparent_hugepage";
    let raw = match root.read(format!("{dir}/enabled")) {
        Ok(Some(s)) => s,
        Ok(None) => return Check::new(ID_THP, Status::Unknown, "no transparent_hugepage/enabled (THP not built in?)", WHY, "nothing"),
        Err(e) => return Check::new(ID_THP, Status::Unknown, format!("{e:#}"), WHY, "check that /sys is mounted"),
    };
    let Some(mode) = selected(&raw) else {
        return Check::new(ID_THP, Status::Unknown, format!("unparsable: {}", raw.trim()), WHY, "nothing");
    };
    let defrag = root.read(format!("{dir}/defrag")).ok().flatten().and_then(|s| selected(&s));
    let found = match &defrag {
        Some(d) => format!("enabled={mode}, defrag={d}"),
        None => format!("enabled={mode}"),
    };
    match mode.as_str() {
        "always" => Check::new(
            ID_THP,
            Status::Warn,
            found,
            WHY,
            "set THP to madvise (echo madvise > /sys/kernel/mm/transparent_hugepage/enabled; boot with transparent_hugepage=madvise to keep it)",
        )
        .with_fix(Fix::WriteFiles {
            writes: vec![FileWrite {
                path: root.path(format!("{dir}/enabled")),
                value: "madvise".into(),
                verify: Verify::Selected,
            }],
        }),
        "madvise" => Check::new(ID_THP, Status::Ok, found, WHY, "nothing"),
        "never" if profile == Profile::Throughput => Check::new(
            ID_THP,
            Status::Warn,
            found,
            WHY,
            "set THP to madvise so allocations that ask for huge pages get them (fewer TLB misses on large state)",
        )
        .with_fix(Fix::WriteFiles {
            writes: vec![FileWrite {
                path: root.path(format!("{dir}/enabled")),
                value: "madvise".into(),
                verify: Verify::Selected,
            }],
        }),
        "never" => Check::new(ID_THP, Status::Ok, found, WHY, "nothing"),
        other => Check::new(ID_THP, Status::Unknown, format!("unexpected mode {other}"), WHY, "nothing"),
    }
}

fn swappiness(root: &Root, profile: Profile, swap_total: Option<u64>) -> Check {
    const WHY: &str = "Swapping out an executor's memory turns a nanosecond access into a \
        disk read; low swappiness keeps anonymous memory (windows, keyed state caches) \
        resident and evicts page cache first.";
    let value = match root.read_trimmed("proc/sys/vm/swappiness") {
        Ok(Some(v)) => v,
        Ok(None) => return Check::new(ID_SWAPPINESS, Status::Unknown, "no /proc/sys/vm/swappiness", WHY, "check that /proc is mounted"),
        Err(e) => return Check::new(ID_SWAPPINESS, Status::Unknown, format!("{e:#}"), WHY, "check that /proc is mounted"),
    };
    let Ok(n) = value.parse::<u32>() else {
        return Check::new(ID_SWAPPINESS, Status::Unknown, format!("unparsable: {value}"), WHY, "nothing");
    };
    let (limit, target) = match profile {
        Profile::Latency => (10, 1),
        Profile::Throughput => (10, 10),
        Profile::Edge => (60, 10),
    };
    let swap = swap_total.map_or("swap unknown".to_string(), |s| {
        if s == 0 {
            "no swap".to_string()
        } else {
            format!("swap {}", bytes(s))
        }
    });
    let found = format!("vm.swappiness={n}, {swap}");
    if n <= limit {
        return Check::new(ID_SWAPPINESS, Status::Ok, found, WHY, "nothing");
    }
    if swap_total == Some(0) {
        return Check::new(
            ID_SWAPPINESS,
            Status::Ok,
            found,
            WHY,
            format!("nothing while there is no swap; set vm.swappiness={target} if swap is added"),
        );
    }
    Check::new(
        ID_SWAPPINESS,
        Status::Warn,
        found,
        WHY,
        format!("set vm.swappiness={target} (sysctl -w; persist in /etc/sysctl.d/)"),
    )
    .with_fix(Fix::WriteFiles {
        writes: vec![FileWrite {
            path: root.path("proc/sys/vm/swappiness"),
            value: target.to_string(),
            verify: Verify::Exact,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_formatting() {
        assert_eq!(bytes(10 << 20), "10 MiB");
        assert_eq!(bytes(512 << 10), "512 KiB");
        assert_eq!(bytes(3 << 30), "3 GiB");
        assert_eq!(bytes(MIB + MIB / 2), "1.5 MiB");
        assert_eq!(bytes(24105 * MIB), "23.5 GiB");
    }

    #[test]
    fn edge_io_memory_is_bounded() {
        assert_eq!(edge_io_memory(Some(512 * MIB), 2), 832 << 10);
        assert_eq!(edge_io_memory(Some(1 << 40), 1), DEFAULT_IO_MEMORY);
        assert_eq!(edge_io_memory(Some(MIB), 4), IO_MEMORY_ALIGN);
        assert_eq!(edge_io_memory(None, 1), 2 * MIB);
    }
}
