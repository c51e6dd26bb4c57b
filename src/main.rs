//! The `weir` command line: run built-in jobs and SQL scripts (embedded, or submitted to a
//! running daemon), start the daemon, address its jobs (list, status, savepoint, stop,
//! cancel), check the machine.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use weir::config::EngineConfig;
use weir::control::client::{self, DaemonAddress};
use weir::control::daemon::{DaemonConfig, EngineOverrides, Submission};
use weir::jobs::{JobOptions, SinkSpec, BUILT_IN_JOBS};
use weir::logging::LogFormat;

/// weir: Apache Flink's job as one thread-per-core binary.
#[derive(Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    /// Log lines as `text` or `json` (one object per line), on stderr.
    #[arg(long, global = true, default_value = "text", value_name = "text|json")]
    log_format: LogFormat,
    /// Log filter, `RUST_LOG` syntax (default: `WEIR_LOG`, else `RUST_LOG`, else `info`),
    /// e.g. `weir=debug` or `warn`.
    #[arg(long, global = true, value_name = "FILTER")]
    log_filter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job: a Flink SQL script (`JOB.sql`) or a built-in job name (see `weir jobs`).
    /// With a daemon (`--daemon`, `WEIR_DAEMON` or the run directory's address file) the job is
    /// submitted to it and its id printed; without one it runs here (bounded jobs run to
    /// completion and exit 0).
    Run(RunArgs),
    /// Start the daemon (the analog of Flink's start-cluster.sh): it owns the cores, serves the
    /// control API and dashboard, and runs the jobs submitted to it.
    Start(StartArgs),
    /// List the daemon's jobs (running, and recently finished).
    List(ListArgs),
    /// Show a job's status.
    Status(JobArgs),
    /// Cancel a job (no savepoint; its output since the last checkpoint is not committed).
    Cancel(JobArgs),
    /// Stop a job with a savepoint (Flink's stop-with-savepoint); prints the savepoint.
    Stop(StopArgs),
    /// Print the plan of a Flink SQL script: operators, key-by columns, exchanges, shards.
    Explain(ExplainArgs),
    /// List the built-in jobs.
    Jobs,
    /// Check this machine for running weir (cores, governor, IRQs, memlock, io_uring, THP, disk).
    Tune(TuneArgs),
    /// Take a savepoint of a running job: `weir savepoint ID` (daemon) or
    /// `weir savepoint --http ADDR` (a job run with `--http`); prints the savepoint.
    Savepoint(SavepointArgs),
    /// Say, before deploying, whether a job can restore from a checkpoint or savepoint, and why not.
    CheckRestore(CheckRestoreArgs),
}

/// How a command reaches the daemon.
#[derive(Args)]
struct ClientArgs {
    /// The daemon's address (default: the address file in the run directory, `$WEIR_RUN_DIR`
    /// or `$XDG_RUNTIME_DIR/weir` or `/tmp/weir-<uid>`).
    #[arg(long, value_name = "ADDR", env = "WEIR_DAEMON")]
    daemon: Option<String>,
    /// Bearer token of the control server.
    #[arg(long, value_name = "TOKEN", env = "WEIR_HTTP_TOKEN")]
    http_token: Option<String>,
}

impl ClientArgs {
    /// The daemon to talk to; an error when there is none.
    fn daemon(&self) -> Result<DaemonAddress, String> {
        client::find_daemon(self.daemon.as_deref())?.ok_or_else(|| {
            format!(
                "no weir daemon found: start one with `weir start`, or name it with --daemon ADDR / WEIR_DAEMON (looked for {})",
                client::run_dir().join(client::DAEMON_FILE).display()
            )
        })
    }
}

#[derive(Args)]
struct ListArgs {
    /// Print the daemon's JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct JobArgs {
    /// The job's id (`weir list`).
    id: String,
    /// Print the JSON answer.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct StopArgs {
    /// The job's id (`weir list`).
    id: String,
    /// Take a savepoint and stop once it is complete (required: `weir cancel` stops without).
    #[arg(long)]
    savepoint: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 120)]
    wait_secs: u64,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Args)]
struct StartArgs {
    /// Address of the control API and dashboard; any non-loopback address needs --http-token.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081")]
    http: String,
    /// Bearer token required by the control API (mandatory to bind a non-loopback address).
    #[arg(long, value_name = "TOKEN", env = "WEIR_HTTP_TOKEN")]
    http_token: Option<String>,
    /// TOML config file: `[engine]` (the jobs' defaults) and `[daemon]` tables; flags override.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// CPUs the daemon gives to jobs (CPUs 0..N); 0 = all online.
    #[arg(long)]
    cores: Option<usize>,
    /// Jobs running at once (0 = one per core).
    #[arg(long)]
    max_jobs: Option<usize>,
    /// Shards of a submitted job that does not say `--cores`.
    #[arg(long)]
    default_job_cores: Option<usize>,
    /// Finished jobs kept for `weir list` / `weir status`.
    #[arg(long)]
    history: Option<usize>,
    /// Jobs checkpoint into DIR/<job name> unless they name a directory.
    #[arg(long, value_name = "DIR")]
    checkpoint_root: Option<PathBuf>,
    /// Do not pin the jobs' shards to their CPUs (CPUs are still accounted).
    #[arg(long)]
    no_pin: bool,
    /// Run in the background: return once the daemon listens (log in the run directory).
    #[arg(long)]
    detach: bool,
}

#[derive(Args)]
struct SavepointArgs {
    /// The job's id in the daemon (`weir list`); without it, `--http` names a job's own server.
    id: Option<String>,
    /// The control address of a job run with `weir run ... --http ADDR` (or of the daemon).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
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
    /// Generator splits of a built-in job, as it would run (0: one per shard).
    #[arg(long, default_value_t = 0)]
    splits: usize,
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
    /// The flags as overrides of a base configuration (without the config file).
    fn overrides(&self) -> EngineOverrides {
        EngineOverrides {
            config_toml: None,
            cores: self.cores,
            no_pin: self.no_pin,
            batch_size: self.batch_size,
            ring_capacity: self.ring_capacity,
            max_key_groups: self.max_key_groups,
            on_bad_record: self.on_bad_record.clone(),
            options: self.options.clone(),
            checkpoint_interval_ms: self.checkpoint_interval_ms,
            checkpoint_dir: self.checkpoint_dir.clone(),
            no_checkpoints: self.no_checkpoints,
            state_backend: self.state_backend,
            state_dir: self.state_dir.clone(),
            state_cache_bytes: self.state_cache_bytes,
        }
    }

    /// The flags and the config file's text, for a submission (paths made absolute).
    fn overrides_for_submission(&self) -> Result<EngineOverrides, String> {
        let mut o = self.overrides();
        if let Some(path) = &self.config {
            o.config_toml = Some(std::fs::read_to_string(path).map_err(|e| format!("reading config {}: {e}", path.display()))?);
        }
        let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
        o.absolutize(&cwd);
        Ok(o)
    }

    /// Where the configuration came from (for the banner).
    fn source(&self) -> String {
        match &self.config {
            Some(path) => format!("{} + flags", path.display()),
            None => "defaults + flags".to_string(),
        }
    }

    fn resolve(&self) -> Result<EngineConfig, String> {
        let base = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("reading config {}: {e}", path.display()))?;
                EngineConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => EngineConfig::default(),
        };
        self.overrides().apply(base)
    }

    /// `weir run` checkpoints by default: every 10 s into `./checkpoints/<job>`.
    fn checkpoint_defaults(&self, config: &mut EngineConfig, job: &str) {
        self.overrides().checkpoint_defaults(config, job, std::path::Path::new("checkpoints"));
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
    /// Generator splits of a built-in job (0: one per shard). Fix it (e.g. 4) to restore a
    /// checkpoint or savepoint on a different number of shards.
    #[arg(long, default_value_t = 0)]
    splits: usize,
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
    /// Submit to the daemon at this address (default: the run directory's address file).
    #[arg(long, value_name = "ADDR", env = "WEIR_DAEMON")]
    daemon: Option<String>,
    /// Run here even when a daemon is running (`--http` implies it).
    #[arg(long)]
    embedded: bool,
    /// With a daemon: wait until the submitted job ends (exit status: finished 0, else 1).
    #[arg(long)]
    wait: bool,
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
    if !args.embedded && args.http.is_none() {
        if let Some(daemon) = client::find_daemon(args.daemon.as_deref())? {
            return submit(&args, &daemon);
        }
    }
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
        sink: args.sink.clone(),
        out_of_orderness_ms: args.out_of_orderness_ms,
        splits: args.splits,
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
        config.restore_from = weir::control::daemon::resolve_restore("latest", &config)?;
    } else if let Some(restore) = &args.restore {
        config.restore_from = weir::control::daemon::resolve_restore(restore, &config)?;
    } else if config.restore_from.is_none() {
        weir::control::daemon::prepare_fresh_start(&config)?;
    }
    tracing::info!(
        "weir {}: job {} on {} shards (pinned: {}), batch {} records, rings of {} batches; checkpoints: {}; state: {:?}{}; config: {}",
        env!("CARGO_PKG_VERSION"),
        args.job,
        config.shard_count(),
        if config.pin_cores {
            format!("CPUs {:?}", weir::control::cpus_of(&config))
        } else {
            "no".into()
        },
        config.batch_size,
        config.ring_capacity_batches,
        match (&config.checkpoint_dir, config.checkpoint_interval_ms) {
            (Some(dir), ms) if ms > 0 => format!("every {ms} ms into {}", dir.display()),
            _ => "off".to_string(),
        },
        config.state_backend,
        config.state_dir.as_ref().map_or(String::new(), |d| format!(" in {}", d.display())),
        args.engine.source(),
    );
    let http = if role.is_some() { None } else { args.http.as_ref() };
    let report = match http {
        None => {
            let registry = std::sync::Arc::new(weir::shard::MetricsRegistry::default());
            let graph = env.graph();
            let job = weir::control::JobHandle::new(&args.job, &graph, config.shard_count(), registry.clone());
            let progress = weir::control::progress::ProgressLogger::start(job, weir::control::progress::DEFAULT_INTERVAL).map_err(|e| e.to_string())?;
            let report = weir::shard::runtime::execute_with_registry(graph, &config, registry);
            drop(progress);
            report
        }
        Some(addr) => {
            let control = weir::control::ControlConfig {
                token: args.http_token.clone(),
                ..Default::default()
            };
            let linger = std::time::Duration::from_secs(args.linger_secs);
            weir::control::execute_with_control(&args.job, env.graph(), &config, addr, control, linger, |bound| {
                tracing::info!("serving http://{bound}/ (metrics: /metrics, status: /api/status)")
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

/// `weir run` with a daemon: send the script (or built-in job) and print the job's id.
fn submit(args: &RunArgs, daemon: &DaemonAddress) -> Result<(), String> {
    let engine = args.engine.overrides_for_submission()?;
    let vars = parse_vars(&args.vars)?.into_iter().collect();
    // A savepoint path means nothing in the daemon's working directory: make it absolute.
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    let restore = args
        .restore
        .as_ref()
        .map(|r| if r == "latest" { r.clone() } else { cwd.join(r).display().to_string() });
    let submission = if args.job.ends_with(".sql") {
        let path = std::path::Path::new(&args.job);
        Submission {
            name: Some(path.file_stem().map_or_else(|| args.job.clone(), |s| s.to_string_lossy().to_string())),
            sql: Some(read_script(path)?),
            vars,
            engine,
            restore: restore.clone(),
            ..Default::default()
        }
    } else {
        let sink = match &args.sink {
            SinkSpec::Blackhole => "blackhole".to_string(),
            SinkSpec::Print => "print".to_string(),
            SinkSpec::File { dir, format } => format!("{}:{}", format!("{format:?}").to_lowercase(), cwd.join(dir).display()),
        };
        Submission {
            builtin: Some(args.job.clone()),
            events: Some(args.events),
            rate: args.rate,
            sink: Some(sink),
            out_of_orderness_ms: Some(args.out_of_orderness_ms),
            splits: Some(args.splits),
            vars,
            engine,
            restore: restore.clone(),
            ..Default::default()
        }
    };
    let body = serde_json::to_vec(&submission).map_err(|e| e.to_string())?;
    let token = args.http_token.as_deref();
    let (status, answer) = client::request(daemon.addr, "POST", "/api/jobs", token, Some(&body), std::time::Duration::from_secs(60))?;
    if status != 201 {
        return Err(format!("{}: {}", args.job, client::error_of(status, &answer)));
    }
    let id = answer["id"].as_str().unwrap_or("?").to_string();
    tracing::info!(
        "submitted job {id} ({}) to the daemon at {} (from {}): {} shards, CPUs {}; dashboard http://{}/jobs/{id}/",
        answer["name"].as_str().unwrap_or("?"),
        daemon.addr,
        daemon.source,
        answer["shards"],
        answer["cpus"],
        daemon.addr
    );
    println!("{id}");
    if !args.wait {
        return Ok(());
    }
    let path = format!("/jobs/{id}/api/status");
    loop {
        let (_, st) = client::request(daemon.addr, "GET", &path, token, None, std::time::Duration::from_secs(10))?;
        match st["state"].as_str() {
            Some("running") => std::thread::sleep(std::time::Duration::from_millis(500)),
            Some("finished") => {
                eprint!("{}", describe_status(&st));
                return Ok(());
            }
            _ => {
                eprint!("{}", describe_status(&st));
                return Err(format!("job {id} {}", st["state"].as_str().unwrap_or("is gone")));
            }
        }
    }
}

/// A job status answer as lines for people.
fn describe_status(st: &serde_json::Value) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    let _ = writeln!(
        s,
        "job:               {} ({})",
        st["id"].as_str().unwrap_or("?"),
        st["job"].as_str().unwrap_or("?")
    );
    let _ = writeln!(s, "state:             {}", st["state"].as_str().unwrap_or("?"));
    if let Some(e) = st["error"].as_str() {
        let _ = writeln!(s, "error:             {e}");
    }
    let _ = writeln!(s, "shards:            {} (CPUs {})", st["shards"], st["cpus"]);
    let _ = writeln!(s, "uptime:            {:.0} s", f(&st["uptime_ms"]) / 1e3);
    let _ = writeln!(s, "records/s:         {:.0}", f(&st["records_per_second"]));
    let _ = writeln!(s, "late dropped:      {}", st["late_records_dropped"]);
    if let Some(b) = st["bottleneck"]["explanation"].as_str() {
        let _ = writeln!(s, "bottleneck:        {b}");
    }
    let c = &st["checkpoints"]["totals"];
    let _ = writeln!(
        s,
        "checkpoints:       {} completed, {} failed, {} aborted, {} in progress",
        c["completed"], c["failed"], c["aborted"], c["in_progress"]
    );
    if !c["last_duration_ms"].is_null() {
        let _ = writeln!(
            s,
            "last checkpoint:   {} ms, {} bytes, alignment {:.1} ms, snapshot {:.1} ms",
            c["last_duration_ms"],
            c["last_bytes"],
            f(&c["last_alignment_ms"]),
            f(&c["last_snapshot_ms"])
        );
    }
    if let Some(l) = c["latest"].as_str() {
        let _ = writeln!(s, "latest checkpoint: {l}");
    }
    if let Some(sp) = st["stopped_with_savepoint"].as_str() {
        let _ = writeln!(s, "stopped with:      {sp}");
    }
    s
}

fn list(args: ListArgs) -> Result<(), String> {
    let daemon = args.client.daemon()?;
    let (status, answer) = client::request(
        daemon.addr,
        "GET",
        "/api/jobs",
        args.client.http_token.as_deref(),
        None,
        std::time::Duration::from_secs(10),
    )?;
    if status != 200 {
        return Err(client::error_of(status, &answer));
    }
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    println!(
        "{:<5} {:<10} {:>6} {:<12} {:>9} {:>11}  NAME",
        "ID", "STATE", "SHARDS", "CPUS", "UPTIME", "CHECKPOINTS"
    );
    for j in answer["jobs"].as_array().into_iter().flatten() {
        let cpus: Vec<String> = j["cpus"].as_array().into_iter().flatten().map(|c| c.to_string()).collect();
        println!(
            "{:<5} {:<10} {:>6} {:<12} {:>8.0}s {:>11}  {}",
            j["id"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?"),
            j["shards"],
            if cpus.is_empty() { "-".to_string() } else { cpus.join(",") },
            j["uptime_ms"].as_f64().unwrap_or(0.0) / 1e3,
            j["checkpoints_completed"],
            j["name"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

fn status(args: JobArgs) -> Result<(), String> {
    let daemon = args.client.daemon()?;
    let path = format!("/jobs/{}/api/status", args.id);
    let (code, answer) = client::request(
        daemon.addr,
        "GET",
        &path,
        args.client.http_token.as_deref(),
        None,
        std::time::Duration::from_secs(10),
    )?;
    if code != 200 {
        return Err(client::error_of(code, &answer));
    }
    if args.json {
        println!("{answer}");
    } else {
        print!("{}", describe_status(&answer));
    }
    Ok(())
}

fn cancel(args: JobArgs) -> Result<(), String> {
    let daemon = args.client.daemon()?;
    let path = format!("/jobs/{}/api/cancel", args.id);
    let (code, answer) = client::request(
        daemon.addr,
        "POST",
        &path,
        args.client.http_token.as_deref(),
        None,
        std::time::Duration::from_secs(90),
    )?;
    if code != 200 {
        return Err(format!("cancel job {}: {}", args.id, client::error_of(code, &answer)));
    }
    println!("job {} {}", args.id, answer["state"].as_str().unwrap_or("cancelled"));
    Ok(())
}

fn stop(args: StopArgs) -> Result<(), String> {
    if !args.savepoint {
        return Err(format!(
            "weir stop {0} stops with a savepoint: say `weir stop {0} --savepoint` (or stop without one: `weir cancel {0}`)",
            args.id
        ));
    }
    let daemon = args.client.daemon()?;
    take_savepoint(
        daemon.addr,
        &format!("/jobs/{}/api/stop", args.id),
        args.client.http_token.as_deref(),
        args.wait_secs,
    )
}

/// POST a savepoint command and print the savepoint's directory.
fn take_savepoint(addr: std::net::SocketAddr, path: &str, token: Option<&str>, wait_secs: u64) -> Result<(), String> {
    let (status, answer) = client::request(addr, "POST", path, token, None, std::time::Duration::from_secs(wait_secs))?;
    match answer["savepoint"].as_str() {
        Some(dir) if status == 200 => {
            println!("{dir}");
            Ok(())
        }
        _ => Err(format!("savepoint failed (HTTP {status}): {}", client::error_of(status, &answer))),
    }
}

fn start(args: StartArgs) -> Result<(), String> {
    if args.detach {
        return start_detached();
    }
    let (mut daemon_config, mut engine) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("reading config {}: {e}", path.display()))?;
            (
                DaemonConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?,
                EngineConfig::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?,
            )
        }
        None => (DaemonConfig::default(), EngineConfig::default()),
    };
    if let Some(c) = args.cores {
        daemon_config.cores = c;
    }
    if let Some(m) = args.max_jobs {
        daemon_config.max_jobs = m;
    }
    if let Some(c) = args.default_job_cores {
        daemon_config.default_job_cores = c;
    }
    if let Some(h) = args.history {
        daemon_config.history = h;
    }
    if let Some(root) = &args.checkpoint_root {
        daemon_config.checkpoint_root = root.clone();
    }
    if args.no_pin {
        engine.pin_cores = false;
    }
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    daemon_config.checkpoint_root = cwd.join(&daemon_config.checkpoint_root);

    // SIGINT and SIGTERM are taken by this thread (sigwait below): block them before any
    // other thread starts, so every thread inherits the mask.
    let signals = block_shutdown_signals();
    let daemon = weir::control::daemon::Daemon::new(daemon_config.clone(), engine.clone()).map_err(|e| e.to_string())?;
    let control = weir::control::ControlConfig {
        token: args.http_token.clone(),
        ..Default::default()
    };
    let server = daemon.serve(&args.http, control).map_err(|e| e.to_string())?;
    let addr = server.local_addr();
    let run_dir = client::run_dir();
    let file = client::DaemonFile {
        addr: addr.to_string(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_ms: weir::time::now_ms(),
    };
    let written = client::write_daemon_file(&run_dir, &file).map_err(|e| format!("writing the address file in {}: {e}", run_dir.display()))?;
    tracing::info!(
        "weir {} daemon: {} cores (CPUs 0..{}, pinned: {}), up to {} jobs, {} cores per job by default; checkpoints under {}; state: {:?}{}; \
         serving http://{addr}/ (metrics: /metrics, jobs: /api/jobs){}; address file {}; config: {}; pid {}",
        env!("CARGO_PKG_VERSION"),
        daemon_config.cpu_count(),
        daemon_config.cpu_count(),
        engine.pin_cores,
        if daemon_config.max_jobs == 0 {
            daemon_config.cpu_count()
        } else {
            daemon_config.max_jobs
        },
        daemon_config.default_job_cores,
        daemon_config.checkpoint_root.display(),
        engine.state_backend,
        engine.state_dir.as_ref().map_or(String::new(), |d| format!(" in {}", d.display())),
        if args.http_token.is_some() { " with a bearer token" } else { "" },
        written.display(),
        args.config
            .as_ref()
            .map_or("defaults + flags".to_string(), |p| format!("{} + flags", p.display())),
        std::process::id(),
    );
    let signal = wait_for_signal(&signals);
    tracing::info!("signal {signal}: shutting down (cancelling running jobs)");
    let left = daemon.shutdown(std::time::Duration::from_secs(30));
    client::remove_daemon_file(&run_dir);
    drop(server);
    if left > 0 {
        return Err(format!("{left} jobs did not stop within 30 s"));
    }
    tracing::info!("daemon stopped");
    Ok(())
}

/// Block SIGINT and SIGTERM in this thread (and the threads it starts).
fn block_shutdown_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask only changes
    // this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Wait for one of the blocked signals; returns its number.
fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: `set` was initialised by `block_shutdown_signals`; `signal` is a valid out pointer.
    unsafe { while libc::sigwait(set, &mut signal) != 0 {} }
    signal
}

/// `weir start --detach`: start `weir start` (same arguments) in a new session with its log in
/// the run directory, and return once it wrote its address file.
/// The child gets the same arguments (log format and filter included) minus `--detach`.
fn start_detached() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let run_dir = client::run_dir();
    if let Some(existing) = client::read_daemon_file(&run_dir) {
        return Err(format!("a weir daemon already runs at {} (pid {})", existing.addr, existing.pid));
    }
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let log_path = run_dir.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--detach").collect();
    let exe = std::env::current_exe().map_err(|e| format!("locating the weir binary: {e}"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the child from our terminal session.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting the daemon: {e}"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(f) = client::read_daemon_file(&run_dir).filter(|f| f.pid == child.id()) {
            println!("weir daemon running at http://{}/ (pid {}, log {})", f.addr, f.pid, log_path.display());
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the daemon exited ({status}); see {}", log_path.display()));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the daemon did not start within 30 s; see {}", log_path.display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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
    let token = args.client.http_token.as_deref();
    let command = if args.stop { "stop" } else { "savepoint" };
    let (addr, path) = match (&args.id, &args.http) {
        // A job's own server (`weir run --http`): its root is the job.
        (None, Some(http)) => {
            use std::net::ToSocketAddrs;
            let addr = http
                .to_socket_addrs()
                .map_err(|e| format!("--http {http}: {e}"))?
                .next()
                .ok_or_else(|| format!("--http {http}: no address"))?;
            (addr, format!("/api/{command}"))
        }
        (Some(id), Some(http)) => (
            client::find_daemon(Some(http))?.expect("explicit address").addr,
            format!("/jobs/{id}/api/{command}"),
        ),
        (Some(id), None) => (args.client.daemon()?.addr, format!("/jobs/{id}/api/{command}")),
        (None, None) => return Err("name the job: `weir savepoint ID` (daemon) or `weir savepoint --http ADDR` (a job run with --http)".into()),
    };
    take_savepoint(addr, &path, token, args.wait_secs)
}

fn check_restore(args: CheckRestoreArgs) -> Result<(), String> {
    let config = args.engine.resolve()?;
    let (meta, restore) = weir::checkpoint::files::read_snapshot(&args.from).map_err(|e| e.to_string())?;
    let options = JobOptions {
        events: 0,
        rate_per_second: None,
        sink: SinkSpec::Blackhole,
        out_of_orderness_ms: 4_000,
        splits: args.splits,
    };
    let env = build_job(&args.job, &args.vars, config, &options)?;
    let config = env.config().clone();
    let graph = env.graph();
    let mut problems = weir::checkpoint::files::check_compatible(&meta, &graph.operators, config.max_key_groups);
    // Source positions carry over only to the same number of splits.
    let shards = config.shard_count();
    for (source, split_count) in &graph.source_splits {
        let Some(before) = restore.split_count(source) else { continue };
        let now = split_count(shards).map_err(|e| format!("{source}: {e}"))?;
        if now != before {
            problems.push(format!(
                "source {source} had {before} splits when this was taken and would have {now} on {shards} shards \
                 (positions cannot be carried over; fix the source's split count, e.g. `--splits {before}`)"
            ));
        }
    }
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
        println!(
            "can restore: yes (on {shards} shards; keyed state restores on any number up to max_key_groups = {})",
            config.max_key_groups
        );
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
    if let Err(e) = weir::logging::init(cli.log_format, cli.log_filter.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Start(args) => start(args),
        Command::List(args) => list(args),
        Command::Status(args) => status(args),
        Command::Cancel(args) => cancel(args),
        Command::Stop(args) => stop(args),
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
