//! IRQ affinity: which interrupts may land on the cores weir pins.
//!
//! Invariants:
//! - Reads `/proc/irq/N/smp_affinity_list` for every numeric `N`, and
//!   `/proc/irq/default_smp_affinity` (a hex mask) for IRQs yet to come.
//! - The fix only ever narrows affinity to the housekeeping cores of the
//!   [`CorePlan`]; with no housekeeping core there is no fix.
//! - Only the latency profile grades IRQ placement; others report it as Ok.

use std::collections::BTreeSet;

use crate::cpu::CorePlan;
use crate::report::{Check, FileWrite, Fix, Status, Verify};
use crate::sysfs::{format_cpu_list, parse_cpu_list, Root};
use crate::Profile;

/// Id of the IRQ affinity check.
pub const ID_AFFINITY: &str = "irq.affinity";

const WHY: &str = "An interrupt handled on a data core preempts the executor pinned there \
    (a NIC or NVMe IRQ can cost tens of microseconds); latency-sensitive setups steer \
    IRQs to housekeeping cores.";

/// Formats CPUs as the kernel's hex mask (`3`, `ff,ffffffff` for >32 CPUs).
pub fn format_cpu_mask(cpus: &BTreeSet<usize>) -> String {
    let words = cpus.iter().next_back().map_or(1, |m| m / 32 + 1);
    let mut parts = Vec::with_capacity(words);
    for w in (0..words).rev() {
        let mut word: u32 = 0;
        for c in cpus.range(w * 32..(w + 1) * 32) {
            word |= 1 << (c - w * 32);
        }
        if parts.is_empty() {
            parts.push(format!("{word:x}"));
        } else {
            parts.push(format!("{word:08x}"));
        }
    }
    parts.join(",")
}

/// Parses the kernel's hex CPU mask (`3`, `00000000,00000003`).
pub fn parse_cpu_mask(s: &str) -> Option<BTreeSet<usize>> {
    let mut out = BTreeSet::new();
    let words: Vec<&str> = s.trim().split(',').collect();
    for (i, w) in words.iter().rev().enumerate() {
        let v = u32::from_str_radix(w, 16).ok()?;
        for bit in 0..32 {
            if v & (1 << bit) != 0 {
                out.insert(i * 32 + bit);
            }
        }
    }
    Some(out)
}

fn irqbalance_running(root: &Root) -> bool {
    let Ok(Some(pids)) = root.list("proc") else {
        return false;
    };
    pids.iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .any(|p| matches!(root.read_trimmed(format!("proc/{p}/comm")), Ok(Some(c)) if c == "irqbalance"))
}

/// The IRQ affinity check.
pub fn check(root: &Root, profile: Profile, plan: &CorePlan) -> Check {
    let irqs = match root.list("proc/irq") {
        Ok(Some(v)) => v,
        Ok(None) => return Check::new(ID_AFFINITY, Status::Unknown, "no /proc/irq", WHY, "check that /proc is mounted"),
        Err(e) => return Check::new(ID_AFFINITY, Status::Unknown, format!("{e:#}"), WHY, "run as root to read IRQ affinity"),
    };
    let mut nums: Vec<u32> = irqs.iter().filter_map(|n| n.parse().ok()).collect();
    nums.sort_unstable();
    let data: BTreeSet<usize> = plan.data.iter().copied().collect();
    let housekeeping: BTreeSet<usize> = plan.housekeeping.iter().copied().collect();
    let mut total = 0;
    let mut on_data = Vec::new();
    let mut errors = Vec::new();
    for n in &nums {
        match root.read(format!("proc/irq/{n}/smp_affinity_list")) {
            Ok(Some(s)) => {
                total += 1;
                match parse_cpu_list(&s) {
                    Ok(set) if !set.is_disjoint(&data) => on_data.push(*n),
                    Ok(_) => {}
                    Err(e) => errors.push(format!("IRQ {n}: {e:#}")),
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let default_mask = root.read("proc/irq/default_smp_affinity").ok().flatten().and_then(|s| parse_cpu_mask(&s));
    if total == 0 {
        let found = errors.first().cloned().unwrap_or_else(|| "no IRQ affinity files".into());
        return Check::new(ID_AFFINITY, Status::Unknown, found, WHY, "run as root on a host that exposes /proc/irq");
    }
    let balance = irqbalance_running(root);
    let shown: Vec<String> = on_data.iter().take(12).map(u32::to_string).collect();
    let mut found = format!(
        "{} of {total} IRQs may run on data cores {}",
        on_data.len(),
        if data.is_empty() { "(none)".into() } else { plan.data_list() }
    );
    if !on_data.is_empty() {
        found.push_str(&format!(" (IRQ {}{})", shown.join(","), if on_data.len() > shown.len() { ",…" } else { "" }));
    }
    if let Some(mask) = &default_mask {
        found.push_str(&format!("; default affinity {}", format_cpu_list(mask)));
    }
    if balance {
        found.push_str("; irqbalance running");
    }
    if !errors.is_empty() {
        found.push_str(&format!("; {} unreadable", errors.len()));
    }
    let default_on_data = default_mask.as_ref().is_some_and(|m| !m.is_disjoint(&data));

    if profile != Profile::Latency {
        return Check::new(ID_AFFINITY, Status::Ok, found, WHY, format!("not graded for the {profile} profile"));
    }
    if on_data.is_empty() && !default_on_data {
        return Check::new(ID_AFFINITY, Status::Ok, found, WHY, "nothing");
    }
    if housekeeping.is_empty() {
        return Check::new(
            ID_AFFINITY,
            Status::Warn,
            found,
            WHY,
            "no housekeeping core to move IRQs to: run weir on fewer cores (--cores) or isolate cores at boot",
        );
    }
    let hk = format_cpu_list(&housekeeping);
    let mut writes: Vec<FileWrite> = on_data
        .iter()
        .map(|n| FileWrite {
            path: root.path(format!("proc/irq/{n}/smp_affinity_list")),
            value: hk.clone(),
            verify: Verify::CpuList,
        })
        .collect();
    if default_on_data {
        writes.push(FileWrite {
            path: root.path("proc/irq/default_smp_affinity"),
            value: format_cpu_mask(&housekeeping),
            verify: Verify::None,
        });
    }
    let mut todo =
        format!("steer IRQs to housekeeping cores {hk} (echo {hk} > /proc/irq/N/smp_affinity_list); some per-CPU or managed IRQs refuse, which is expected");
    if balance {
        todo.push_str(&format!(
            "; irqbalance will move them back: set IRQBALANCE_BANNED_CPULIST={} or stop it",
            plan.data_list()
        ));
    }
    Check::new(ID_AFFINITY, Status::Warn, found, WHY, todo).with_fix(Fix::WriteFiles { writes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_round_trip() {
        let set: BTreeSet<usize> = [0, 1].into_iter().collect();
        assert_eq!(format_cpu_mask(&set), "3");
        let big: BTreeSet<usize> = [0, 33].into_iter().collect();
        assert_eq!(format_cpu_mask(&big), "2,00000001");
        assert_eq!(parse_cpu_mask("2,00000001").unwrap(), big);
        assert_eq!(parse_cpu_mask("3\n").unwrap(), set);
        assert_eq!(format_cpu_mask(&BTreeSet::new()), "0");
    }
}
