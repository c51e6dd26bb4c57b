//! The `weir` command line: run built-in jobs (and SQL scripts), check the machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use weir::config::EngineConfig;
use weir::jobs::{JobOptions, SinkSpec, BUILT_IN_JOBS};

/// weir: Apache Flink's job as one thread-per-core binary.
#[derive(Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job: a Flink SQL script (`JOB.sql`) or a built-in job name (see `weir jobs`).
    /// Bounded jobs run to completion and exit 0.
    Run(RunArgs),
    /// Print the plan of a Flink SQL script: operators, key-by columns, exchanges, shards.
    Explain(ExplainArgs),
    /// List the built-in jobs.
    Jobs,
    /// Check this machine for running weir (cores, governor, IRQs, memlock, io_uring, THP, disk).
    Tune(TuneArgs),
    /// Take a savepoint of a running job (started with `--http`), optionally stopping it.
    Savepoint(SavepointArgs),
    /// Say, before deploying, whether a job can restore from a checkpoint or savepoint, and why not.
    CheckRestore(CheckRestoreArgs),
}

#[derive(Args)]
struct SavepointArgs {
    /// The job's control address (`weir run ... --http ADDR`).
    #[arg(long, value_name = "ADDR")]
    http: String,
    /// Bearer token of the control server.
    #[arg(long, value_name = "TOKEN", env = "WEIR_HTTP_TOKEN")]
    http_token: Option<String>,
    /// Stop the job once the savepoint is complete (Flink's stop-with-savepoint).
    #[arg(long)]
    stop: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
}

#[derive(Args)]
struct CheckRestoreArgs {
    /// A Flink SQL script (`*.sql`) or a built-in job name.
    job: String,
    /// The checkpoint or savepoint directory (holding `_metadata`).
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    /// SQL script variable `${NAME}` = VALUE (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct EngineArgs {
    /// TOML config file with an `[engine]` table; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Shards (pinned cores); 0 = all online cores.
    #[arg(long)]
    cores: Option<usize>,
    /// Do not pin shards to cores.
    #[arg(long)]
    no_pin: bool,
    /// Records per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Ring capacity in batches.
    #[arg(long)]
    ring_capacity: Option<usize>,
    /// Key groups (unit of rescaling; fixed for a job's savepoints).
    #[arg(long)]
    max_key_groups: Option<u32>,
    /// What to do with unparsable input: fail, skip or dead-letter.
    #[arg(long, value_parser = ["fail", "skip", "dead-letter"])]
    on_bad_record: Option<String>,
    /// Flink option `KEY=VALUE` (repeatable), e.g. `--set execution.checkpointing.interval='5 s'`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// Checkpoint interval in ms (`execution.checkpointing.interval`; `weir run` default 10000).
    #[arg(long, value_name = "MS")]
    checkpoint_interval_ms: Option<u64>,
    /// Checkpoint directory (`execution.checkpointing.dir`; `weir run` default
    /// `./checkpoints/<job>`).
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Run without checkpoints (no recovery; sinks write without two-phase commit).
    #[arg(long)]
    no_checkpoints: bool,
    /// Keyed-state backend: memory (Flink: hashmap) or lsm (Flink: rocksdb).
    #[arg(long, value_name = "BACKEND")]
    state_backend: Option<weir::state::StateBackendKind>,
    /// Root folder of the LSM state stores (default: temporary, removed at the end).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// LSM backend: bytes of state cached in memory per keyed operator per shard.
    #[arg(long, value_name = "BYTES")]
    state_cache_bytes: Option<usize>,
}

impl EngineArgs {
    fn resolve(&self) -> Result<EngineConfig, String> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("reading config {}: {e}", path.display()))?;
                EngineConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => EngineConfig::default(),
        };
        if let Some(c) = self.cores {
            config.cores = c;
        }
        if self.no_pin {
            config.pin_cores = false;
        }
        if let Some(b) = self.batch_size {
            config.batch_size = b;
        }
        if let Some(r) = self.ring_capacity {
            config.ring_capacity_batches = r;
        }
        if let Some(k) = self.max_key_groups {
            config.max_key_groups = k;
        }
        if let Some(b) = self.state_backend {
            config.state_backend = b;
        }
        if let Some(d) = &self.state_dir {
            config.state_dir = Some(d.clone());
        }
        if let Some(c) = self.state_cache_bytes {
            config.state_cache_bytes = c;
        }
        if let Some(p) = &self.on_bad_record {
            config.on_bad_record = toml::Value::String(p.clone()).try_into().map_err(|e| format!("--on-bad-record: {e}"))?;
        }
        for option in &self.options {
            let (key, value) = option.split_once('=').ok_or_else(|| format!("--set {option}: expected KEY=VALUE"))?;
            let value = value.trim_matches(|c| c == '\'' || c == '"');
            if !config.set_flink_option(key.trim(), value).map_err(|e| format!("--set: {e}"))? {
                return Err(format!("--set {option}: unknown option `{key}`"));
            }
        }
        if let Some(ms) = self.checkpoint_interval_ms {
            config.checkpoint_interval_ms = ms;
        }
        if let Some(dir) = &self.checkpoint_dir {
            config.checkpoint_dir = Some(dir.clone());
        }
        if self.no_checkpoints {
            config.checkpoint_interval_ms = 0;
        }
        Ok(config)
    }

    /// `weir run` checkpoints by default: every 10 s into `./checkpoints/<job>`.
    fn checkpoint_defaults(&self, config: &mut EngineConfig, job: &str) {
        if self.no_checkpoints {
            return;
        }
        if config.checkpoint_interval_ms == 0 && self.checkpoint_interval_ms.is_none() {
            config.checkpoint_interval_ms = 10_000;
        }
        if config.checkpoint_dir.is_none() {
            let stem = std::path::Path::new(job)
                .file_stem()
                .map_or_else(|| job.to_string(), |s| s.to_string_lossy().to_string());
            config.checkpoint_dir = Some(PathBuf::from("checkpoints").join(stem));
        }
    }
}

#[derive(Args)]
struct ExplainArgs {
    /// The Flink SQL script.
    script: PathBuf,
    /// Script variable `${NAME}` = VALUE (repeatable), e.g. `--var DATA=/data`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Parse `NAME=VALUE` pairs.
fn parse_vars(vars: &[String]) -> Result<std::collections::HashMap<String, String>, String> {
    vars.iter()
        .map(|v| {
            v.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--var {v}: expected NAME=VALUE"))
        })
        .collect()
}

fn read_script(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

#[derive(Args)]
struct RunArgs {
    /// A Flink SQL script (`*.sql`) or a built-in job name (`weir jobs` lists them).
    job: String,
    /// SQL script variable `${NAME}` = VALUE (repeatable), e.g. `--var DATA=/data`.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Events to generate (0 = unbounded).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Events per second over all shards (default: as fast as possible).
    #[arg(long)]
    rate: Option<u64>,
    /// Sink: blackhole, print, csv:<folder> or json:<folder>.
    #[arg(long, default_value = "blackhole")]
    sink: SinkSpec,
    /// Watermark delay in ms (bounded out-of-orderness).
    #[arg(long, default_value_t = 4_000)]
    out_of_orderness_ms: i64,
    /// Serve metrics (/metrics), status (/api/status) and a dashboard (/) on this address while
    /// the job runs, e.g. 127.0.0.1:8081 (port 0: pick one; the address is printed).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Bearer token required by the HTTP server (mandatory to bind a non-loopback address).
    #[arg(long, value_name = "TOKEN", env = "WEIR_HTTP_TOKEN")]
    http_token: Option<String>,
    /// Keep serving the final state this many seconds after the job ends.
    #[arg(long, default_value_t = 0)]
    linger_secs: u64,
    /// Resume from a checkpoint or savepoint: `latest` (the newest complete checkpoint in the
    /// checkpoint directory; from the beginning if there is none) or a `chk-<n>` directory.
    #[arg(long, value_name = "latest|DIR")]
    restore: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct TuneArgs {
    /// Profile to check against: latency, throughput or edge.
    #[arg(long, default_value = "latency")]
    profile: String,
    /// State directory to check (filesystem, disk scheduler).
    #[arg(long, default_value = ".")]
    state_dir: PathBuf,
    /// Shards weir will run (default: all online cores).
    #[arg(long)]
    cores: Option<usize>,
    /// Apply what can be changed (needs root).
    #[arg(long)]
    apply: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn run(args: RunArgs) -> Result<(), String> {
    let mut config = args.engine.resolve()?;
    args.engine.checkpoint_defaults(&mut config, &args.job);
    if config.scale_out_job.is_none() {
        let stem = std::path::Path::new(&args.job).file_stem().map(|s| s.to_string_lossy().to_string());
        config.scale_out_job = stem.map(|s| weir::scaleout::topic_safe(&s));
    }
    // A process the scale-out supervisor started: one stage of one slot (see weir::scaleout).
    let role = match std::env::var(weir::scaleout::membership::ROLE_ENV) {
        Ok(v) => {
            Some(weir::scaleout::membership::parse_role(&v).ok_or_else(|| format!("{}={v}: expected <slot>:<stage>", weir::scaleout::membership::ROLE_ENV))?)
        }
        Err(_) => None,
    };
    let checkpoint_root = config.checkpoint_dir.clone();
    if let Some(role) = role {
        let root = checkpoint_root
            .clone()
            .ok_or("a scaled-out job needs checkpoints (do not pass --no-checkpoints)")?;
        config.scale_out_role = Some(role);
        config.checkpoint_dir = Some(weir::scaleout::stage_dir(&root, role.slot, role.stage));
    }
    let options = JobOptions {
        events: args.events,
        rate_per_second: args.rate,
        sink: args.sink,
        out_of_orderness_ms: args.out_of_orderness_ms,
    };
    let env = build_job(&args.job, &args.vars, config, &options)?;
    let mut config = env.config().clone();
    config.validate()?;
    if config.scale_out_slots > 0 && role.is_none() {
        return supervise(&args.job, args.restore.is_some(), &config, checkpoint_root);
    }
    if role.is_some() {
        if config.scale_out_slots == 0 {
            return Err("started as a slot of a scaled-out job, but the job does not set weir.scale-out.slots".into());
        }
        config.restore_from = resolve_restore("latest", &config)?;
    } else if let Some(restore) = &args.restore {
        config.restore_from = resolve_restore(restore, &config)?;
    }
    eprintln!(
        "weir {}: job {} on {} shards (pinned: {}), batch {} records, rings of {} batches",
        env!("CARGO_PKG_VERSION"),
        args.job,
        config.shard_count(),
        config.pin_cores,
        config.batch_size,
        config.ring_capacity_batches
    );
    let http = if role.is_some() { None } else { args.http.as_ref() };
    let report = match http {
        None => weir::shard::runtime::execute(env.graph(), &config),
        Some(addr) => {
            let control = weir::control::ControlConfig {
                token: args.http_token.clone(),
                ..Default::default()
            };
            let linger = std::time::Duration::from_secs(args.linger_secs);
            weir::control::execute_with_control(&args.job, env.graph(), &config, addr, control, linger, |bound| {
                eprintln!("weir: serving http://{bound}/ (metrics: /metrics, status: /api/status)")
            })
        }
    }
    .map_err(|e| e.to_string())?;
    eprint!("{}", weir::jobs::summary(&report));
    Ok(())
}

/// A scaled-out job (`weir.scale-out.slots`): this process joins the job's consumer group and
/// runs the slots the group gives it, each stage as a child `weir run` with the same arguments
/// (see `weir::scaleout::membership`).
fn supervise(job: &str, restore: bool, config: &EngineConfig, checkpoint_root: Option<PathBuf>) -> Result<(), String> {
    let root = checkpoint_root.ok_or("a scaled-out job needs checkpoints (do not pass --no-checkpoints)")?;
    if !config.checkpointing() {
        return Err("a scaled-out job needs checkpoints (execution.checkpointing.interval)".into());
    }
    if restore {
        return Err("a scaled-out job always restores each slot's latest checkpoint: drop --restore".into());
    }
    let group = config
        .scale_out_group
        .clone()
        .ok_or("a scaled-out job needs a Kafka table with 'properties.group.id'")?;
    let exe = std::env::current_exe().map_err(|e| format!("finding the weir binary: {e}"))?;
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let child = std::sync::Arc::new(move |_role: weir::scaleout::Role| {
        let mut c = std::process::Command::new(&exe);
        c.args(&argv);
        c
    });
    eprintln!(
        "weir {}: job {} scaled out over {} slots, group `{}`",
        env!("CARGO_PKG_VERSION"),
        job,
        config.scale_out_slots,
        group.group
    );
    weir::scaleout::membership::run_supervisor(weir::scaleout::membership::SupervisorConfig {
        connection: group.connection,
        group: group.group,
        job: config.scale_out_job.clone().unwrap_or_else(|| "weir".into()),
        slots: config.scale_out_slots,
        checkpoint_root: root,
        child,
        max_restarts: 10,
    })
    .map_err(|e| e.to_string())
}

/// `--restore latest|DIR` → the checkpoint directory to restore, if any (says what it chose).
fn resolve_restore(restore: &str, config: &EngineConfig) -> Result<Option<PathBuf>, String> {
    let dir = if restore == "latest" {
        let root = config
            .checkpoint_dir
            .clone()
            .ok_or("--restore latest needs a checkpoint directory (--checkpoint-dir or execution.checkpointing.dir)")?;
        match weir::checkpoint::files::CheckpointStore::new(&root).latest().map_err(|e| e.to_string())? {
            Some(dir) => dir,
            None => {
                eprintln!("weir: no complete checkpoint in {}: starting from the beginning", root.display());
                return Ok(None);
            }
        }
    } else {
        PathBuf::from(restore)
    };
    let meta = weir::checkpoint::files::read_meta(&dir).map_err(|e| e.to_string())?;
    eprintln!(
        "weir: restoring {:?} {} of job {} (taken on {} shards{})",
        meta.kind,
        dir.display(),
        meta.job,
        meta.shards,
        if meta.finished {
            "; the job had finished: only its last output is committed"
        } else {
            ""
        }
    );
    Ok(Some(dir))
}

/// Build a job (SQL script or built-in) without running it.
fn build_job(job: &str, vars: &[String], config: EngineConfig, options: &JobOptions) -> Result<weir::api::StreamEnv, String> {
    if job.ends_with(".sql") {
        let path = std::path::Path::new(job);
        let script = read_script(path)?;
        let vars = parse_vars(vars)?;
        weir::sql::build(&script, &vars, config).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        let env = weir::api::StreamEnv::new(config);
        weir::jobs::build(&env, job, options).map_err(|e| e.to_string())?;
        Ok(env)
    }
}

fn savepoint(args: SavepointArgs) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let addr = args
        .http
        .to_socket_addrs()
        .map_err(|e| format!("--http {}: {e}", args.http))?
        .next()
        .ok_or_else(|| format!("--http {}: no address", args.http))?;
    let path = if args.stop { "/api/stop" } else { "/api/savepoint" };
    let timeout = std::time::Duration::from_secs(args.wait_secs);
    let (status, body) = weir::control::http_post(addr, path, args.http_token.as_deref(), timeout).map_err(|e| format!("{addr}: {e}"))?;
    let answer: serde_json::Value = serde_json::from_str(&body).map_err(|_| format!("{addr}{path}: HTTP {status}: {body}"))?;
    match answer["savepoint"].as_str() {
        Some(dir) if status == 200 => {
            println!("{dir}");
            Ok(())
        }
        _ => Err(format!("savepoint failed (HTTP {status}): {}", answer["error"].as_str().unwrap_or(&body))),
    }
}

fn check_restore(args: CheckRestoreArgs) -> Result<(), String> {
    let config = args.engine.resolve()?;
    let meta = weir::checkpoint::files::read_meta(&args.from).map_err(|e| e.to_string())?;
    let options = JobOptions {
        events: 0,
        rate_per_second: None,
        sink: SinkSpec::Blackhole,
        out_of_orderness_ms: 4_000,
    };
    let env = build_job(&args.job, &args.vars, config, &options)?;
    let config = env.config().clone();
    let problems = weir::checkpoint::files::check_compatible(&meta, &env.graph().operators, config.max_key_groups);
    println!(
        "{:?} {} (epoch {}, job {}, {} shards, format {}): {} keyed operators, {} sources",
        meta.kind,
        args.from.display(),
        meta.epoch,
        meta.job,
        meta.shards,
        meta.format_version,
        meta.keyed_operators.len(),
        meta.sources.len()
    );
    if problems.is_empty() {
        println!("can restore: yes (on any number of shards up to max_key_groups = {})", config.max_key_groups);
        Ok(())
    } else {
        for p in &problems {
            println!("  - {p}");
        }
        Err(format!("{} cannot restore {}", args.job, args.from.display()))
    }
}

fn explain(args: ExplainArgs) -> Result<(), String> {
    let config = args.engine.resolve()?;
    config.validate()?;
    let script = read_script(&args.script)?;
    let vars = parse_vars(&args.vars)?;
    let plan = weir::sql::explain(&script, &vars, config).map_err(|e| format!("{}: {e}", args.script.display()))?;
    print!("{plan}");
    Ok(())
}

fn tune(args: TuneArgs) -> Result<(), String> {
    let profile: weir_tuning::Profile = args.profile.parse().map_err(|e| format!("--profile: {e}"))?;
    let options = weir_tuning::TuneOptions {
        profile,
        state_dir: args.state_dir,
        cores: args.cores,
        sysfs_root: "/".into(),
    };
    let report = weir_tuning::run_checks(&options);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if args.apply {
        for result in weir_tuning::apply(&report, profile) {
            println!("{result:?}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Jobs => {
            for (name, what) in BUILT_IN_JOBS {
                println!("{name:16} {what}");
            }
            Ok(())
        }
        Command::Tune(args) => tune(args),
        Command::Explain(args) => explain(args),
        Command::Savepoint(args) => savepoint(args),
        Command::CheckRestore(args) => check_restore(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
