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

#[test]
fn apply_reports_permission_errors_on_real_kernel_files() {
    use weir_tuning::report::{FileWrite, Fix, Verify};
    use weir_tuning::{apply, run_checks_with, ApplyOutcome, Host, Status, UringProbe};

    // A read-only sysctl: even root gets EACCES, and nothing can change.
    let target = std::path::Path::new("/proc/sys/kernel/osrelease");
    if !target.exists() {
        return;
    }
    let host = Host {
        memlock: Err("not read".into()),
        cap_ipc_lock: None,
        uring: UringProbe::NotRun,
        state_fs: Err("not read".into()),
    };
    let empty = tempfile::tempdir().unwrap();
    let opts = TuneOptions {
        sysfs_root: empty.path().to_path_buf(),
        ..TuneOptions::default()
    };
    let mut report = run_checks_with(&opts, &host);
    let c = &mut report.checks[0];
    c.status = Status::Warn;
    c.can_apply = true;
    c.fix = Some(Fix::WriteFiles {
        writes: vec![FileWrite {
            path: target.to_path_buf(),
            value: "weir-test".into(),
            verify: Verify::Exact,
        }],
    });
    let results = apply(&report, opts.profile);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome, ApplyOutcome::PermissionDenied, "{results:?}");
    assert!(results[0].message.contains("permission denied"), "{results:?}");
}
