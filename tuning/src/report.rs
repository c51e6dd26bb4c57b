//! The report: one [`Check`] per finding, and its text and JSON renderings.
//!
//! Invariants:
//! - `can_apply` is true exactly when `fix` is `Some`; build checks with
//!   [`Check::new`] and [`Check::with_fix`] to keep it so.
//! - A fix holds the concrete writes [`crate::apply()`] will do (real paths,
//!   already joined to the sysfs root), so the JSON shows exactly what
//!   `--apply` would change and a report read back from JSON can be applied.
//! - Rendering never fails and never panics.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cpu::CorePlan;
use crate::Profile;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// As the profile wants.
    Ok,
    /// Works, but costs latency or throughput; worth fixing.
    Warn,
    /// weir will not run, or will run badly, until fixed.
    Fail,
    /// Could not be determined (file missing, not readable, not applicable).
    Unknown,
}

impl Status {
    /// Upper-case label for the text table.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// How [`crate::apply()`] confirms a write took effect by reading the file back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// The file must read back as exactly the value (trimmed).
    Exact,
    /// The file is a choice list; the value must be the `[selected]` one.
    Selected,
    /// The file must read back as the same CPU set (any list spelling).
    CpuList,
    /// Do not read back.
    None,
}

/// One file write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    /// Real path (already under the sysfs root).
    pub path: PathBuf,
    /// What to write (no trailing newline needed).
    pub value: String,
    /// How to confirm it.
    pub verify: Verify,
}

/// What [`crate::apply()`] would do for a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fix {
    /// Write each file in turn (each write is reported on its own).
    WriteFiles {
        /// The writes.
        writes: Vec<FileWrite>,
    },
    /// `setrlimit(RLIMIT_MEMLOCK)` for the current process.
    RaiseMemlock {
        /// New soft limit in bytes.
        soft: u64,
        /// New hard limit in bytes (raising it needs `CAP_SYS_RESOURCE`).
        hard: u64,
    },
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable id, e.g. `cpu.governor` (see [`crate::CHECK_IDS`]).
    pub id: String,
    /// Grade against the report's profile.
    pub status: Status,
    /// What was found on the machine.
    pub found: String,
    /// Why this matters for weir.
    pub why_it_matters: String,
    /// What to do about it (empty-ish when Ok).
    pub what_to_do: String,
    /// Whether `--apply` can fix it.
    pub can_apply: bool,
    /// The fix `--apply` would do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<Fix>,
}

impl Check {
    /// A check with no fix.
    pub fn new(id: &str, status: Status, found: impl Into<String>, why_it_matters: &str, what_to_do: impl Into<String>) -> Check {
        Check {
            id: id.to_string(),
            status,
            found: found.into(),
            why_it_matters: why_it_matters.to_string(),
            what_to_do: what_to_do.into(),
            can_apply: false,
            fix: None,
        }
    }

    /// Attaches a fix (and sets `can_apply`).
    pub fn with_fix(mut self, fix: Fix) -> Check {
        self.can_apply = true;
        self.fix = Some(fix);
        self
    }
}

/// Result of [`crate::run_checks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Profile the checks were graded against.
    pub profile: Profile,
    /// Root `/sys` and `/proc` were read under.
    pub sysfs_root: PathBuf,
    /// The state directory checked.
    pub state_dir: PathBuf,
    /// `uname -r`, if readable.
    pub kernel: Option<String>,
    /// Which CPUs weir would pin and which are left for housekeeping.
    pub cores: CorePlan,
    /// The checks, in [`crate::CHECK_IDS`] order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The check with `id`, if present.
    pub fn get(&self, id: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Number of checks with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// Worst status in the report (Fail > Warn > Unknown > Ok).
    pub fn worst(&self) -> Status {
        let rank = |s: Status| match s {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warn => 2,
            Status::Fail => 3,
        };
        self.checks.iter().map(|c| c.status).max_by_key(|s| rank(*s)).unwrap_or(Status::Ok)
    }

    /// Pretty JSON (never fails: the types are plain data).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"serializing report: {e}\"}}"))
    }

    /// A table 120 columns wide: check, status, found, why, what to do.
    /// "Why" is shown only for checks that are not Ok, to keep healthy rows
    /// short; [`Report::to_json`] always carries it.
    pub fn to_text(&self) -> String {
        self.to_text_width(120)
    }

    /// The table wrapped to `width` columns (at least 60).
    pub fn to_text_width(&self, width: usize) -> String {
        let width = width.max(60);
        let mut out = String::new();
        out.push_str(&format!(
            "weir tune: profile {}, kernel {}, state dir {}\n",
            self.profile,
            self.kernel.as_deref().unwrap_or("?"),
            self.state_dir.display()
        ));
        out.push_str(&format!(
            "cores: data {} / housekeeping {} ({})\n\n",
            non_empty(&self.cores.data_list()),
            non_empty(&self.cores.housekeeping_list()),
            self.cores.basis
        ));

        // check | status | found | why | what to do, separated by " | ".
        let fixed_id = 20;
        let fixed_status = 7;
        let seps = 3 * 4;
        let flex = width.saturating_sub(fixed_id + fixed_status + seps);
        let found_w = flex * 30 / 100;
        let why_w = flex * 35 / 100;
        let todo_w = flex - found_w - why_w;
        let widths = [fixed_id, fixed_status, found_w, why_w, todo_w];

        let header = ["check", "status", "found", "why it matters", "what to do"].map(|s| vec![s.to_string()]);
        push_row(&mut out, &widths, &header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(rule.join("-+-").trim_end());
        out.push('\n');
        for c in &self.checks {
            let todo = if c.can_apply {
                format!("{} [--apply can fix]", c.what_to_do)
            } else {
                c.what_to_do.clone()
            };
            let cells = [
                wrap(&c.id, widths[0]),
                wrap(c.status.label(), widths[1]),
                wrap(&c.found, widths[2]),
                wrap(if c.status == Status::Ok { "" } else { &c.why_it_matters }, widths[3]),
                wrap(&todo, widths[4]),
            ];
            push_row(&mut out, &widths, &cells);
            out.push('\n');
        }
        out.push_str(&format!(
            "{} ok, {} warn, {} fail, {} unknown; {} fixable with --apply\n",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Unknown),
            self.checks.iter().filter(|c| c.can_apply && c.status != Status::Ok).count()
        ));
        out
    }
}

fn non_empty(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}

fn push_row(out: &mut String, widths: &[usize; 5], cells: &[Vec<String>; 5]) {
    let lines = cells.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..lines {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, w)| {
                let text = cell.get(i).map(String::as_str).unwrap_or("");
                format!("{text:<w$}")
            })
            .collect();
        out.push_str(parts.join(" | ").trim_end());
        out.push('\n');
    }
}

/// Greedy word wrap; words longer than `width` are split.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..width).collect());
        }
        let word: String = word.into_iter().collect();
        if word.is_empty() {
            continue;
        }
        let needed = if line.is_empty() {
            word.chars().count()
        } else {
            line.chars().count() + 1 + word.chars().count()
        };
        if needed > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_respects_width() {
        let lines = wrap("the quick brown fox jumps over a_very_long_identifier_here", 10);
        assert!(lines.iter().all(|l| l.chars().count() <= 10), "{lines:?}");
        assert_eq!(lines.concat().replace(' ', ""), "thequickbrownfoxjumpsovera_very_long_identifier_here");
        assert_eq!(wrap("", 5), vec![String::new()]);
    }
}
