//! Progress lines for running jobs: every interval, one `tracing` line per job with the
//! records its sources read (and the rate since the last line), the records its sinks took,
//! the lowest watermark (how far a backfill has come in event time) and checkpoints completed.
//! For a bounded job reading history this is the backfill progress; for an unbounded one, a
//! heartbeat.
//!
//! Invariants: one thread per logged job at the control plane's lowered priority, woken once
//! per interval (and at drop, which joins it); it only reads the job's registry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::JobHandle;
use crate::error::Result;
use crate::time::{WATERMARK_MAX, WATERMARK_MIN};

/// How often a running job logs its progress by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Logs a job's progress until dropped.
pub struct ProgressLogger {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What one progress line says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    pub records_read: u64,
    pub records_written: u64,
    /// Lowest watermark of the segment heads that have one (epoch ms).
    pub watermark: Option<i64>,
    pub checkpoints_completed: u64,
}

/// The job's progress now.
pub fn progress_of(job: &JobHandle) -> Progress {
    let ops = job.registry.operator_snapshots();
    let sum = |prefix: &str, f: fn(&crate::shard::metrics::OperatorSnapshot) -> u64| ops.iter().filter(|o| o.name.starts_with(prefix)).map(f).sum();
    Progress {
        records_read: sum("source:", |o| o.records_out),
        records_written: sum("sink:", |o| o.records_in),
        watermark: ops
            .iter()
            .filter(|o| super::status::is_segment_head(o) && o.watermark > WATERMARK_MIN && o.watermark < WATERMARK_MAX)
            .map(|o| o.watermark)
            .min(),
        checkpoints_completed: job.registry.checkpoints.totals().completed,
    }
}

/// An epoch-ms time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn iso_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

impl ProgressLogger {
    /// Log `job`'s progress every `interval` until dropped.
    pub fn start(job: Arc<JobHandle>, interval: Duration) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = super::spawn_control_thread("weir-progress", move || {
            let mut last = (Instant::now(), 0u64);
            loop {
                let wake = Instant::now() + interval;
                while !flag.load(Ordering::Acquire) && Instant::now() < wake {
                    std::thread::park_timeout(wake.saturating_duration_since(Instant::now()));
                }
                if flag.load(Ordering::Acquire) || !job.is_running() {
                    return;
                }
                let p = progress_of(&job);
                let secs = last.0.elapsed().as_secs_f64().max(1e-3);
                let rate = p.records_read.saturating_sub(last.1) as f64 / secs;
                last = (Instant::now(), p.records_read);
                tracing::info!(
                    job = %job.name,
                    job_id = %job.id,
                    records_read = p.records_read,
                    records_written = p.records_written,
                    checkpoints = p.checkpoints_completed,
                    "progress: {} records read ({rate:.0}/s), {} written, watermark {}",
                    p.records_read,
                    p.records_written,
                    p.watermark.map_or("none yet".to_string(), iso_time),
                );
            }
        })?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for ProgressLogger {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_time_is_utc() {
        assert_eq!(super::iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(super::iso_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
