//! weir-tuning: the engine behind `weir tune`.
//!
//! It inspects the machine weir is about to run on (CPUs, IRQs, memory
//! limits, io_uring, disks, the state directory's filesystem), grades each
//! finding against a [`Profile`], and can apply the fixes that are safe to
//! apply at run time ([`apply()`]).
//!
//! Invariants:
//! - [`run_checks`] never panics and never fails: anything it cannot read
//!   becomes a check with [`Status::Unknown`], and the report always holds
//!   every id in [`CHECK_IDS`], in that order.
//! - Every path under `/sys` and `/proc` is read relative to
//!   [`TuneOptions::sysfs_root`], so tests run against a fake tree. Facts
//!   that only the live process or kernel can tell (rlimits, capabilities,
//!   the io_uring probe, `statfs` of the state directory) are gathered once
//!   into a [`Host`], which tests build by hand.
//! - Nothing is written to the machine except by [`apply()`].

pub mod apply;
pub mod cpu;
pub mod disk;
pub mod io_uring;
pub mod irq;
pub mod memory;
pub mod report;
pub mod sysfs;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use apply::{apply, ApplyOutcome, ApplyResult};
pub use cpu::CorePlan;
pub use disk::StateFs;
pub use io_uring::UringProbe;
pub use memory::Memlock;
pub use report::{Check, Fix, Report, Status, Verify};

/// Every check id, in report order. Stable: scripts and the JSON output key
/// on these.
pub const CHECK_IDS: &[&str] = &[
    cpu::ID_COUNT,
    cpu::ID_ISOLATION,
    cpu::ID_GOVERNOR,
    cpu::ID_CLOCKSOURCE,
    irq::ID_AFFINITY,
    memory::ID_MEMLOCK,
    memory::ID_THP,
    memory::ID_SWAPPINESS,
    io_uring::ID_AVAILABLE,
    io_uring::ID_OPCODES,
    disk::ID_SCHEDULER,
    disk::ID_STATE_FS,
];

/// What the machine is being tuned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Lowest tail latency: performance governor, isolated cores, THP
    /// `never`/`madvise`, IRQs kept off the data cores.
    Latency,
    /// Highest throughput: performance governor, THP `madvise`.
    Throughput,
    /// Small gateways: few cores, little memory; keep locked memory modest.
    Edge,
}

impl Profile {
    /// Lower-case name, as used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Latency => "latency",
            Profile::Throughput => "throughput",
            Profile::Edge => "edge",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "latency" => Ok(Profile::Latency),
            "throughput" => Ok(Profile::Throughput),
            "edge" => Ok(Profile::Edge),
            other => Err(format!("unknown profile {other:?} (expected latency, throughput or edge)")),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Inputs to [`run_checks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TuneOptions {
    /// Profile to grade against.
    pub profile: Profile,
    /// Directory weir keeps its state in (its filesystem and disk are checked).
    pub state_dir: PathBuf,
    /// How many cores (executors) weir will pin; `None` means one per data
    /// core (see [`CorePlan`]).
    pub cores: Option<usize>,
    /// Root that `/sys` and `/proc` are read under; `/` on a real machine.
    pub sysfs_root: PathBuf,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions {
            profile: Profile::Latency,
            state_dir: PathBuf::from("."),
            cores: None,
            sysfs_root: PathBuf::from("/"),
        }
    }
}

/// Facts about the live process and kernel that cannot be read from the
/// sysfs/proc tree. [`Host::live`] gathers them; tests build one by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// `RLIMIT_MEMLOCK` of this process, or why it could not be read.
    pub memlock: Result<Memlock, String>,
    /// Whether this process holds `CAP_IPC_LOCK` (locked memory is then not
    /// charged against the rlimit); `None` if unknown.
    pub cap_ipc_lock: Option<bool>,
    /// Outcome of setting up a ring and probing its opcodes.
    pub uring: UringProbe,
    /// Filesystem of the state directory (or its nearest existing ancestor).
    pub state_fs: Result<StateFs, String>,
}

impl Host {
    /// Gathers the live facts for `opts` (its state directory is `statfs`ed).
    pub fn live(opts: &TuneOptions) -> Host {
        Host {
            memlock: memory::current_memlock().map_err(|e| format!("{e:#}")),
            cap_ipc_lock: memory::has_cap_ipc_lock(),
            uring: io_uring::probe_live(),
            state_fs: disk::stat_state_dir(&opts.state_dir).map_err(|e| format!("{e:#}")),
        }
    }
}

/// Runs every check against the live machine (reading sysfs/proc under
/// `opts.sysfs_root`). Never panics; see [`run_checks_with`].
pub fn run_checks(opts: &TuneOptions) -> Report {
    run_checks_with(opts, &Host::live(opts))
}

/// Runs every check using `host` for the facts that are not files.
pub fn run_checks_with(opts: &TuneOptions, host: &Host) -> Report {
    let root = sysfs::Root::new(&opts.sysfs_root);
    let plan = cpu::plan_cores(&root, opts.cores);
    let mut checks = Vec::with_capacity(CHECK_IDS.len());
    checks.extend(cpu::checks(&root, opts.profile, &plan, opts.cores));
    checks.push(irq::check(&root, opts.profile, &plan));
    checks.extend(memory::checks(&root, opts.profile, &plan, host));
    checks.extend(io_uring::checks(&root, &host.uring));
    checks.extend(disk::checks(&root, host));
    debug_assert_eq!(checks.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), CHECK_IDS);
    Report {
        profile: opts.profile,
        sysfs_root: opts.sysfs_root.clone(),
        state_dir: opts.state_dir.clone(),
        kernel: root.read_trimmed("proc/sys/kernel/osrelease").ok().flatten(),
        cores: plan,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_round_trip() {
        for p in [Profile::Latency, Profile::Throughput, Profile::Edge] {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert!("fast".parse::<Profile>().is_err());
    }
}
