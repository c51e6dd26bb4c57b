//! Stand-in for `weir tune` until the CLI is wired:
//! `cargo run -p weir-tuning --example tune -- [latency|throughput|edge]
//! [--state-dir DIR] [--cores N] [--root DIR] [--json] [--apply]`.
//!
//! Exit code: 0 when nothing is Fail, 1 otherwise, 2 on bad arguments.

use weir_tuning::apply::results_to_text;
use weir_tuning::{apply, run_checks, Status, TuneOptions};

fn main() {
    let mut opts = TuneOptions::default();
    let (mut json, mut do_apply) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--json" => json = true,
            "--apply" => do_apply = true,
            "--state-dir" => opts.state_dir = value("--state-dir").into(),
            "--root" => opts.sysfs_root = value("--root").into(),
            "--cores" => {
                opts.cores = Some(value("--cores").parse().unwrap_or_else(|e| {
                    eprintln!("--cores: {e}");
                    std::process::exit(2)
                }))
            }
            other => {
                opts.profile = other.parse().unwrap_or_else(|e| {
                    eprintln!("{e}");
                    std::process::exit(2)
                })
            }
        }
    }
    let report = run_checks(&opts);
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if do_apply {
        print!("{}", results_to_text(&apply(&report, opts.profile)));
    }
    std::process::exit(i32::from(report.worst() == Status::Fail));
}
