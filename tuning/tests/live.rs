//! Runs the real checks on this machine: every check id must be present and
//! nothing may panic. The machine's values are not asserted (they vary); the
//! report is printed for `--nocapture` runs.

use weir_tuning::{run_checks, Profile, TuneOptions, CHECK_IDS};

#[test]
fn live_probe_reports_every_check() {
    let state = tempfile::tempdir().unwrap();
    for profile in [Profile::Latency, Profile::Throughput, Profile::Edge] {
        let opts = TuneOptions {
            profile,
            state_dir: state.path().join("not-yet-created"),
            ..TuneOptions::default()
        };
        let report = run_checks(&opts);
        let ids: Vec<&str> = report.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, CHECK_IDS);
        for c in &report.checks {
            assert!(!c.found.is_empty(), "{c:?}");
            assert!(!c.why_it_matters.is_empty(), "{c:?}");
            assert_eq!(c.can_apply, c.fix.is_some(), "{c:?}");
        }
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["checks"].as_array().unwrap().len(), CHECK_IDS.len());
        if profile == Profile::Latency {
            println!("{}", report.to_text());
        }
    }
}
