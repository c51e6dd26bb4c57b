//! Helpers of the Kinesis and Pulsar source tests: a sink whose records the test can watch
//! while the job runs, and producers for the test servers (`WEIR_TEST_KINESIS`,
//! `WEIR_TEST_PULSAR`, started by `.ci/services.sh`).
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use weir::batch::Batch;
use weir::operator::Push;
use weir::prelude::*;
use weir::shard::BuildCtx;
use weir::sink::Sink;
use weir::source::kinesis::client::{self, KinesisEndpoint};
use weir::source::kinesis::sigv4::Credentials;

/// Records pushed into a shared vector as they arrive (readable while the job runs).
#[derive(Clone)]
pub struct SharedSink<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Default for SharedSink<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T: Clone> SharedSink<T> {
    pub fn snapshot(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
}

impl<T: Clone + Send + 'static> Sink<T> for SharedSink<T> {
    fn name(&self) -> String {
        "shared".into()
    }
    fn build(&self, _ctx: &mut BuildCtx<'_>, _name: &str) -> weir::error::Result<Box<dyn Push<T>>> {
        Ok(Box::new(SharedPush(self.0.clone())))
    }
}

struct SharedPush<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Push<T> for SharedPush<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        self.0.lock().unwrap().extend(batch.records.drain(..));
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut weir::checkpoint::runtime::TaskSnapshot) {}
}

/// Test credentials (kinesalite checks their form, not the signature).
pub const ACCESS_KEY: &str = "weir-test";
pub const SECRET_KEY: &str = "weir-test-secret";

pub fn kinesis_endpoint(url: &str) -> Arc<KinesisEndpoint> {
    Arc::new(
        KinesisEndpoint::new(
            url,
            "us-east-1",
            Credentials {
                access_key_id: ACCESS_KEY.into(),
                secret_access_key: SECRET_KEY.into(),
                session_token: None,
            },
        )
        .unwrap(),
    )
}

/// Create `stream` with `shards` shards (ACTIVE on return).
pub fn create_stream(url: &str, stream: &str, shards: u32) {
    let stream = stream.to_string();
    client::blocking(kinesis_endpoint(url), move |mut c| async move { c.create_stream(&stream, shards).await })
        .unwrap()
        .unwrap();
}

/// Put `(partition key, data)` records in order (to one shard when `hash_key` is given).
pub fn put_records(url: &str, stream: &str, records: Vec<(String, Vec<u8>)>, hash_key: Option<&str>) -> Vec<String> {
    let (stream, hash_key) = (stream.to_string(), hash_key.map(str::to_string));
    client::blocking(kinesis_endpoint(url), move |mut c| async move {
        c.put_records(&stream, &records, hash_key.as_deref()).await
    })
    .unwrap()
    .unwrap()
}

/// A name unique to this test process and `what`.
pub fn unique(what: &str) -> String {
    format!("weir-{what}-{}-{}", std::process::id(), weir::time::now_ms())
}

/// Run `weir run SCRIPT` (2 shards, checkpoints every 30 ms into `dir/checkpoints`, no restart
/// strategy) until it exits 0: each run is SIGKILLed a seeded 0–`max_delay_ms` ms after it
/// completed a checkpoint of its own, at most `max_kills` times; each restart restores the
/// newest complete checkpoint. Returns (kills, runs, restored runs).
pub fn sigkill_loop(script: &str, vars: &[(&str, String)], dir: &std::path::Path, seed: u64, max_kills: usize, max_delay_ms: u64) -> (usize, usize, usize) {
    sigkill_loop_with(script, vars, dir, seed, max_kills, max_delay_ms, &mut || {})
}

/// [`sigkill_loop`], calling `after_kill` after each kill (before the restart).
pub fn sigkill_loop_with(
    script: &str,
    vars: &[(&str, String)],
    dir: &std::path::Path,
    seed: u64,
    max_kills: usize,
    max_delay_ms: u64,
    after_kill: &mut dyn FnMut(),
) -> (usize, usize, usize) {
    use std::io::Read as _;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    use weir::checkpoint::files::CheckpointStore;

    let script_path = dir.join("job.sql");
    std::fs::write(&script_path, script).unwrap();
    let checkpoints = dir.join("checkpoints");
    let mut rng = super::Rng::new(seed);
    let (mut kills, mut runs, mut restored) = (0, 0, 0);
    loop {
        runs += 1;
        assert!(runs <= max_kills + 1, "the job did not finish");
        let latest = CheckpointStore::new(&checkpoints).latest().unwrap();
        let mut toml = format!(
            "[engine]\ncheckpoint_interval_ms = 30\ncheckpoint_dir = {:?}\nrestart_attempts = 0\n",
            checkpoints.display().to_string()
        );
        if let Some(chk) = &latest {
            restored += 1;
            toml.push_str(&format!("restore_from = {:?}\n", chk.display().to_string()));
        }
        let config_path = dir.join("weir.toml");
        std::fs::write(&config_path, toml).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.arg("run").arg(&script_path);
        for (k, v) in vars {
            cmd.args(["--var", &format!("{k}={v}")]);
        }
        let mut child = cmd
            .arg("--config")
            .arg(&config_path)
            .args(["--cores", "2", "--no-pin"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let kill_delay = (kills < max_kills).then(|| Duration::from_millis(rng.next_u64() % max_delay_ms.max(1)));
        let started = Instant::now();
        let mut armed: Option<Instant> = None;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if armed.is_none() && kill_delay.is_some() && CheckpointStore::new(&checkpoints).latest().ok().flatten() != latest {
                armed = Some(Instant::now());
            }
            if let (Some(at), Some(delay)) = (armed, kill_delay) {
                if at.elapsed() >= delay {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    eprintln!("run {runs} killed {delay:?} after its first checkpoint, {:?} after start", started.elapsed());
                    after_kill();
                    break None;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(180), "run {runs} hangs");
            std::thread::sleep(Duration::from_millis(2));
        };
        let err = errors.join().unwrap();
        if let Some(status) = status {
            assert!(status.success(), "run {runs} failed: {err}");
            eprintln!("run {runs} completed in {:?}", started.elapsed());
            return (kills, runs, restored);
        }
    }
}

/// Seeded events `(key, value, ms)`: time moves forward 0..20 ms per event, each up to 300 ms
/// early (less than the tests' 1 s watermark delay, so nothing is late on any split).
pub fn seeded_events(seed: u64, n: usize, keys: i64) -> Vec<(i64, i64, i64)> {
    let mut rng = super::Rng::new(seed);
    let mut base = 1_700_000_000_000i64;
    (0..n)
        .map(|_| {
            base += rng.range(0, 20);
            (rng.range(0, keys), rng.range(-50, 50), base - rng.range(0, 300))
        })
        .collect()
}

/// The rows `k,window_start,count,sum` of 1 s tumbling windows over `events`, sorted (what the
/// tests' SQL writes).
pub fn expected_windows(events: &[(i64, i64, i64)]) -> Vec<String> {
    let mut want: std::collections::BTreeMap<(i64, i64), (i64, i64)> = Default::default();
    for (k, v, ms) in events {
        let w = want.entry((*k, ms - ms.rem_euclid(1000))).or_default();
        w.0 += 1;
        w.1 += v;
    }
    let mut rows: Vec<String> = want
        .iter()
        .map(|((k, w), (c, t))| {
            let mut s = String::new();
            weir::sql::types::format_timestamp(*w, &mut s);
            format!("{k},{s},{c},{t}")
        })
        .collect();
    rows.sort();
    rows
}

/// A private pulsar-lite broker (the binary named by `WEIR_PULSAR_LITE_BIN`, exported by
/// `.ci/services.sh`) on a fixed loopback port and data folder, restartable with its data.
pub struct PulsarLite {
    bin: String,
    dir: std::path::PathBuf,
    pub port: u16,
    child: Option<std::process::Child>,
}

impl PulsarLite {
    pub fn start(bin: &str, dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("pulsar-lite.toml"), "default_partitions = 2\n\n[metrics]\nenabled = false\n").unwrap();
        let mut b = PulsarLite {
            bin: bin.to_string(),
            dir: dir.to_path_buf(),
            port,
            child: None,
        };
        b.launch();
        b
    }

    pub fn url(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("server.log")).unwrap();
        let child = std::process::Command::new(&self.bin)
            .current_dir(&self.dir)
            .arg("--config")
            .arg(self.dir.join("pulsar-lite.toml"))
            .args(["--addr", &format!("127.0.0.1:{}", self.port), "--log-level", "warn", "--db-path"])
            .arg(self.dir.join("db"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "pulsar-lite did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stop (SIGTERM, waited for) and start again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }
}

impl Drop for PulsarLite {
    fn drop(&mut self) {
        self.stop();
    }
}
