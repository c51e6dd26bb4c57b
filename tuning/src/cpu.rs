//! CPU checks: count and core plan, isolation (`isolated`, `nohz_full`),
//! frequency governor, clock source.
//!
//! Invariants:
//! - [`plan_cores`] is the single place that decides which CPUs weir pins
//!   ("data cores") and which are left to the OS ("housekeeping"); the IRQ
//!   and memory checks use the same plan. Rule: isolated CPUs first; else,
//!   if fewer cores than online CPUs are asked for, the highest-numbered
//!   ones (CPU 0 takes most kernel housekeeping); else every online CPU.
//!   Data cores are always inside this process's cpuset (cgroup v2
//!   `cpuset.cpus.effective`, v1 `cpuset.effective_cpus`) when one is
//!   readable; housekeeping is every other online CPU.
//! - Data and housekeeping are disjoint and their union is the online set.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::report::{Check, FileWrite, Fix, Status, Verify};
use crate::sysfs::{format_cpu_list, parse_cpu_list, Root};
use crate::Profile;

/// Id of the CPU count check.
pub const ID_COUNT: &str = "cpu.count";
/// Id of the CPU isolation check.
pub const ID_ISOLATION: &str = "cpu.isolation";
/// Id of the frequency governor check.
pub const ID_GOVERNOR: &str = "cpu.governor";
/// Id of the clock source check.
pub const ID_CLOCKSOURCE: &str = "cpu.clocksource";

const CPU_DIR: &str = "sys/devices/system/cpu";

/// Which CPUs weir pins and which are left to the OS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorePlan {
    /// Online CPUs (empty if unknown).
    pub online: Vec<usize>,
    /// CPUs the kernel isolated (`isolcpus=`), empty if none.
    pub isolated: Vec<usize>,
    /// CPUs this process's cpuset allows; `None` if no cpuset was readable.
    #[serde(default)]
    pub cpuset: Option<Vec<usize>>,
    /// CPUs weir would pin its executors to.
    pub data: Vec<usize>,
    /// Online CPUs left for the OS, IRQs and kernel threads.
    pub housekeeping: Vec<usize>,
    /// How the plan was chosen, in words.
    pub basis: String,
}

impl CorePlan {
    /// Data cores as a kernel CPU list.
    pub fn data_list(&self) -> String {
        format_cpu_list(&self.data.iter().copied().collect())
    }
    /// Online CPUs this process may pin (online ∩ cpuset, when the cpuset
    /// overlaps the online set).
    pub fn usable(&self) -> BTreeSet<usize> {
        let online: BTreeSet<usize> = self.online.iter().copied().collect();
        match &self.cpuset {
            Some(c) => {
                let c: BTreeSet<usize> = c.iter().copied().collect();
                let both: BTreeSet<usize> = online.intersection(&c).copied().collect();
                if both.is_empty() {
                    online
                } else {
                    both
                }
            }
            None => online,
        }
    }
    /// Housekeeping cores as a kernel CPU list.
    pub fn housekeeping_list(&self) -> String {
        format_cpu_list(&self.housekeeping.iter().copied().collect())
    }
}

fn read_set(root: &Root, rel: &str) -> anyhow::Result<Option<BTreeSet<usize>>> {
    match root.read(rel)? {
        Some(s) => Ok(Some(parse_cpu_list(&s)?)),
        None => Ok(None),
    }
}

/// CPUs allowed by this process's cpuset cgroup, from `/proc/self/cgroup`
/// and the cgroup filesystem (v2, then v1); `None` if not readable.
pub fn cpuset(root: &Root) -> Option<BTreeSet<usize>> {
    let cgroups = root.read("proc/self/cgroup").ok().flatten()?;
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            candidates.push(format!("sys/fs/cgroup/{path}/cpuset.cpus.effective"));
        } else if controllers.split(',').any(|c| c == "cpuset") {
            candidates.push(format!("sys/fs/cgroup/cpuset/{path}/cpuset.effective_cpus"));
            candidates.push(format!("sys/fs/cgroup/cpuset/{path}/cpuset.cpus"));
        }
    }
    candidates
        .iter()
        .find_map(|rel| read_set(root, rel).ok().flatten())
        .filter(|set| !set.is_empty())
}

/// Decides data and housekeeping cores for `cores` executors (see module doc).
pub fn plan_cores(root: &Root, cores: Option<usize>) -> CorePlan {
    let all_online = read_set(root, &format!("{CPU_DIR}/online")).ok().flatten().unwrap_or_default();
    let cpuset = cpuset(root);
    // Data cores are picked from the CPUs this process may run on.
    let online: BTreeSet<usize> = match &cpuset {
        Some(allowed) if !allowed.is_disjoint(&all_online) => all_online.intersection(allowed).copied().collect(),
        _ => all_online.clone(),
    };
    let isolated: BTreeSet<usize> = read_set(root, &format!("{CPU_DIR}/isolated"))
        .ok()
        .flatten()
        .unwrap_or_default()
        .intersection(&online)
        .copied()
        .collect();
    let want = cores.unwrap_or(if isolated.is_empty() { online.len() } else { isolated.len() });

    let (data, basis): (BTreeSet<usize>, String) = if online.is_empty() {
        ((0..cores.unwrap_or(0)).collect(), "online CPUs unknown; assuming CPUs from 0".into())
    } else if !isolated.is_empty() {
        let mut data: BTreeSet<usize> = isolated.iter().copied().take(want).collect();
        let extra = want.saturating_sub(data.len());
        data.extend(online.iter().rev().filter(|c| !isolated.contains(c)).take(extra));
        (data, "isolated CPUs first".into())
    } else if want < online.len() {
        (
            online.iter().rev().take(want).copied().collect(),
            "highest-numbered online CPUs; CPU 0 side left for housekeeping".into(),
        )
    } else {
        (online.clone(), "every online CPU".into())
    };
    let housekeeping = all_online.difference(&data).copied().collect();
    let basis = if online.len() < all_online.len() {
        format!("{basis}, within cpuset {}", format_cpu_list(&online))
    } else {
        basis
    };
    CorePlan {
        online: all_online.into_iter().collect(),
        isolated: isolated.into_iter().collect(),
        cpuset: cpuset.map(|c| c.into_iter().collect()),
        data: data.into_iter().collect(),
        housekeeping,
        basis,
    }
}

/// All CPU checks, in id order.
pub fn checks(root: &Root, profile: Profile, plan: &CorePlan, cores: Option<usize>) -> Vec<Check> {
    vec![
        count(plan, profile, cores),
        isolation(root, profile, plan),
        governor(root, profile, plan),
        clocksource(root),
    ]
}

fn count(plan: &CorePlan, profile: Profile, cores: Option<usize>) -> Check {
    const WHY: &str = "weir runs one executor per pinned core; a core shared with the OS, \
        interrupts or another executor adds jitter and steals cycles.";
    if plan.online.is_empty() {
        return Check::new(
            ID_COUNT,
            Status::Unknown,
            "could not read /sys/devices/system/cpu/online",
            WHY,
            "check that /sys is mounted",
        );
    }
    let usable = plan.usable();
    let limited = if usable.len() < plan.online.len() {
        format!(", cpuset allows {}", format_cpu_list(&usable))
    } else {
        String::new()
    };
    let found = format!(
        "{} online ({}){limited}; weir pins {} ({}), housekeeping {}",
        plan.online.len(),
        format_cpu_list(&plan.online.iter().copied().collect()),
        plan.data.len(),
        plan.data_list(),
        if plan.housekeeping.is_empty() {
            "none".to_string()
        } else {
            plan.housekeeping_list()
        }
    );
    if let Some(n) = cores {
        if n > usable.len() {
            return Check::new(
                ID_COUNT,
                Status::Fail,
                format!("{found}; {n} cores requested"),
                WHY,
                format!("ask for at most {} cores (one per CPU weir may use)", usable.len()),
            );
        }
        if n == 0 {
            return Check::new(ID_COUNT, Status::Fail, found, WHY, "ask for at least 1 core");
        }
    }
    if profile == Profile::Latency && plan.housekeeping.is_empty() {
        let todo = if plan.online.len() > 1 {
            format!("leave a core for the OS: run with --cores {}", plan.online.len() - 1)
        } else {
            "use a machine with at least 2 CPUs for the latency profile".to_string()
        };
        return Check::new(ID_COUNT, Status::Warn, found, WHY, todo);
    }
    Check::new(ID_COUNT, Status::Ok, found, WHY, "nothing")
}

/// The CPU list given to `key=` on the kernel command line, flags dropped.
pub fn cmdline_cpus(cmdline: &str, key: &str) -> Option<BTreeSet<usize>> {
    let prefix = format!("{key}=");
    cmdline
        .split_whitespace()
        .find_map(|tok| tok.strip_prefix(prefix.as_str()))
        .and_then(|v| parse_cpu_list(v).ok())
}

fn isolation(root: &Root, profile: Profile, plan: &CorePlan) -> Check {
    const WHY: &str = "Isolated cores (isolcpus=) get no ordinary tasks and, with nohz_full=, \
        no scheduler tick: the executor pinned there is not preempted, which removes \
        most tail-latency spikes.";
    let cmdline = match root.read("proc/cmdline") {
        Ok(c) => c.unwrap_or_default(),
        Err(e) => return Check::new(ID_ISOLATION, Status::Unknown, format!("{e:#}"), WHY, "check that /proc is mounted"),
    };
    let isolated_file = match root.read(format!("{CPU_DIR}/isolated")) {
        Ok(v) => v,
        Err(e) => return Check::new(ID_ISOLATION, Status::Unknown, format!("{e:#}"), WHY, "check that /sys is mounted"),
    };
    let nohz = cmdline_cpus(&cmdline, "nohz_full").unwrap_or_default();
    let isolated: BTreeSet<usize> = plan.isolated.iter().copied().collect();
    let data: BTreeSet<usize> = plan.data.iter().copied().collect();
    let found = format!(
        "isolated: {}; nohz_full: {}",
        if isolated.is_empty() { "none".into() } else { format_cpu_list(&isolated) },
        if nohz.is_empty() { "none".into() } else { format_cpu_list(&nohz) },
    );
    if profile != Profile::Latency {
        return Check::new(ID_ISOLATION, Status::Ok, found, WHY, format!("not needed for the {profile} profile"));
    }
    if isolated_file.is_none() {
        return Check::new(
            ID_ISOLATION,
            Status::Unknown,
            "no /sys/devices/system/cpu/isolated",
            WHY,
            "check that /sys is mounted",
        );
    }
    // Suggest every online CPU but the first as data cores when none are set.
    let suggest: BTreeSet<usize> = if plan.housekeeping.is_empty() {
        plan.online.iter().skip(1).copied().collect()
    } else {
        data.clone()
    };
    let s = format_cpu_list(&suggest);
    let boot = if s.is_empty() {
        "use a machine with at least 2 CPUs, then isolate all but CPU 0".to_string()
    } else {
        format!("add to the kernel command line and reboot: isolcpus=managed_irq,domain,{s} nohz_full={s} rcu_nocbs={s}")
    };
    if !data.is_empty() && data.is_subset(&isolated) {
        if data.is_subset(&nohz) {
            Check::new(ID_ISOLATION, Status::Ok, found, WHY, "nothing")
        } else {
            Check::new(
                ID_ISOLATION,
                Status::Ok,
                found,
                WHY,
                format!("optional: also add nohz_full={s} rcu_nocbs={s} to stop the tick on data cores"),
            )
        }
    } else {
        Check::new(ID_ISOLATION, Status::Warn, found, WHY, boot)
    }
}

fn governor(root: &Root, profile: Profile, plan: &CorePlan) -> Check {
    const WHY: &str = "Power-saving governors lower the clock when a core looks idle; a \
        thread-per-core executor that polls then wakes pays for the ramp-up in latency, \
        and throughput drops under bursty load.";
    let mut by_gov: std::collections::BTreeMap<String, BTreeSet<usize>> = Default::default();
    let mut writes = Vec::new();
    let mut no_performance = BTreeSet::new();
    let mut errors = Vec::new();
    for &cpu in &plan.online {
        let base = format!("{CPU_DIR}/cpu{cpu}/cpufreq");
        match root.read_trimmed(format!("{base}/scaling_governor")) {
            Ok(Some(g)) => {
                if g != "performance" {
                    let avail = root.read(format!("{base}/scaling_available_governors")).ok().flatten();
                    // No list → try anyway; a list without it → cannot.
                    if avail.as_deref().is_none_or(|a| a.split_whitespace().any(|w| w == "performance")) {
                        writes.push(FileWrite {
                            path: root.path(format!("{base}/scaling_governor")),
                            value: "performance".into(),
                            verify: Verify::Exact,
                        });
                    } else {
                        no_performance.insert(cpu);
                    }
                }
                by_gov.entry(g).or_default().insert(cpu);
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if by_gov.is_empty() {
        let found = errors
            .first()
            .cloned()
            .unwrap_or_else(|| "no cpufreq interface (fixed clock, or a VM whose host sets the frequency)".into());
        return Check::new(
            ID_GOVERNOR,
            Status::Unknown,
            found,
            WHY,
            "nothing to set here; on bare metal, enable cpufreq (intel_pstate/acpi-cpufreq) and set the BIOS power profile to performance",
        );
    }
    let found = by_gov
        .iter()
        .map(|(g, cpus)| format!("{g} on {}", format_cpu_list(cpus)))
        .collect::<Vec<_>>()
        .join("; ");
    let all_perf = by_gov.len() == 1 && by_gov.contains_key("performance");
    if all_perf {
        return Check::new(ID_GOVERNOR, Status::Ok, found, WHY, "nothing");
    }
    if profile == Profile::Edge {
        return Check::new(ID_GOVERNOR, Status::Ok, found, WHY, "fine for edge; use performance if power and heat allow");
    }
    let mut todo = "set the performance governor on every CPU (cpupower frequency-set -g performance)".to_string();
    if !no_performance.is_empty() {
        todo.push_str(&format!(
            "; CPUs {} do not offer performance (check the cpufreq driver)",
            format_cpu_list(&no_performance)
        ));
    }
    let check = Check::new(ID_GOVERNOR, Status::Warn, found, WHY, todo);
    if writes.is_empty() {
        check
    } else {
        check.with_fix(Fix::WriteFiles { writes })
    }
}

fn clocksource(root: &Root) -> Check {
    const WHY: &str = "weir reads the clock for every event-time watermark and latency \
        sample; tsc (and kvm-clock, arch_sys_counter) are read in user space via the vDSO, \
        while hpet or acpi_pm cost a system call and microseconds each.";
    let dir = "sys/devices/system/clocksource/clocksource0";
    let current = match root.read_trimmed(format!("{dir}/current_clocksource")) {
        Ok(Some(c)) => c,
        Ok(None) => return Check::new(ID_CLOCKSOURCE, Status::Unknown, "no current_clocksource", WHY, "check that /sys is mounted"),
        Err(e) => return Check::new(ID_CLOCKSOURCE, Status::Unknown, format!("{e:#}"), WHY, "check that /sys is mounted"),
    };
    let available = root.read_trimmed(format!("{dir}/available_clocksource")).ok().flatten().unwrap_or_default();
    let found = if available.is_empty() {
        current.clone()
    } else {
        format!("{current} (available: {available})")
    };
    let fast = ["tsc", "kvm-clock", "arch_sys_counter", "hyperv_clocksource_tsc_page", "riscv_clocksource"];
    if fast.contains(&current.as_str()) {
        return Check::new(ID_CLOCKSOURCE, Status::Ok, found, WHY, "nothing");
    }
    let todo = if available.split_whitespace().any(|w| w == "tsc") {
        "switch to tsc: echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource (boot with tsc=reliable if the kernel marked it unstable)"
            .to_string()
    } else {
        "use a machine or VM type with an invariant TSC (or kvm-clock)".to_string()
    };
    Check::new(ID_CLOCKSOURCE, Status::Warn, found, WHY, todo)
}
