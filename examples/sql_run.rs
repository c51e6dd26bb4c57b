//! Run (or explain) a Flink SQL script with weir until the CLI's `weir run job.sql` is wired:
//!
//!     cargo run --release --example sql_run -- JOB.sql CORES DATA_DIR OUT_DIR [explain]
//!
//! `${DATA}` and `${OUT}` in the script become DATA_DIR and OUT_DIR.

use std::collections::HashMap;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: sql_run JOB.sql CORES DATA_DIR OUT_DIR [explain]");
        std::process::exit(2);
    }
    let text = match std::fs::read_to_string(&args[1]) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", args[1]);
            std::process::exit(2);
        }
    };
    let cores: usize = args[2].parse().unwrap_or(1);
    let vars: HashMap<String, String> = [("DATA".to_string(), args[3].clone()), ("OUT".to_string(), args[4].clone())].into();
    let config = weir::config::EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    };
    if args.get(5).map(String::as_str) == Some("explain") {
        match weir::sql::explain(&text, &vars, config) {
            Ok(plan) => println!("{plan}"),
            Err(e) => {
                eprintln!("{}: {e}", args[1]);
                std::process::exit(1);
            }
        }
        return;
    }
    let started = std::time::Instant::now();
    match weir::sql::run_script(&text, &vars, config) {
        Ok(report) => {
            println!("done in {:.1} ms on {} shard(s)", started.elapsed().as_secs_f64() * 1e3, report.shards);
            for (name, f) in &report.operators {
                println!(
                    "  {name}: in {} out {} late dropped {} bad {}",
                    f.records_in, f.records_out, f.late_records_dropped, f.bad_records
                );
            }
        }
        Err(e) => {
            eprintln!("{}: {e}", args[1]);
            std::process::exit(1);
        }
    }
}
