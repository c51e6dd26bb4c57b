//! The command line's side of the daemon: where a running daemon is found, and the requests
//! `weir run` (submit), `weir list`, `weir status`, `weir savepoint`, `weir stop` and
//! `weir cancel` send.
//!
//! Finding the daemon, first match wins: `--daemon ADDR` (or `WEIR_DAEMON=ADDR`); else the
//! address file `daemon.json` in the run directory — `$WEIR_RUN_DIR`, else
//! `$XDG_RUNTIME_DIR/weir`, else `<temp dir>/weir-<uid>` — written by `weir start` when it
//! listens and removed when it exits; a file whose process is gone is ignored (stale).
//!
//! Invariants: the address file holds no secret (address, pid, version, start time; the
//! bearer token comes from `--http-token` / `WEIR_HTTP_TOKEN`); it is written atomically
//! (temporary file + rename, mode 0600, directory 0700), so a reader never sees half a file.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Name of the address file in the run directory.
pub const DAEMON_FILE: &str = "daemon.json";

/// What `weir start` writes into the run directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonFile {
    pub addr: String,
    pub pid: u32,
    pub version: String,
    pub started_ms: i64,
}

/// The run directory (see the module doc).
pub fn run_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WEIR_RUN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("weir");
    }
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("weir-{uid}"))
}

/// Write the address file into `dir` (created 0700 if missing). Returns its path.
pub fn write_daemon_file(dir: &Path, file: &DaemonFile) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let path = dir.join(DAEMON_FILE);
    let tmp = dir.join(format!(".{DAEMON_FILE}.{}", std::process::id()));
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&serde_json::to_vec(file).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Remove the address file in `dir` if it is this process's.
pub fn remove_daemon_file(dir: &Path) {
    let path = dir.join(DAEMON_FILE);
    if read_file(&path).is_some_and(|f| f.pid == std::process::id()) {
        let _ = std::fs::remove_file(path);
    }
}

fn read_file(path: &Path) -> Option<DaemonFile> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The live daemon recorded in `dir`, if any.
pub fn read_daemon_file(dir: &Path) -> Option<DaemonFile> {
    read_file(&dir.join(DAEMON_FILE)).filter(|f| alive(f.pid))
}

/// Where a daemon was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonAddress {
    pub addr: SocketAddr,
    /// `--daemon`, `WEIR_DAEMON` or the address file's path.
    pub source: String,
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("daemon address {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("daemon address {addr}: no address"))
}

/// Find the daemon: `explicit` (from `--daemon` / `WEIR_DAEMON`), else the run directory's
/// address file. `Ok(None)`: no daemon (run embedded).
pub fn find_daemon(explicit: Option<&str>) -> Result<Option<DaemonAddress>, String> {
    if let Some(a) = explicit.filter(|a| !a.is_empty()) {
        return Ok(Some(DaemonAddress {
            addr: resolve(a)?,
            source: "--daemon / WEIR_DAEMON".into(),
        }));
    }
    let dir = run_dir();
    match read_daemon_file(&dir) {
        Some(f) => Ok(Some(DaemonAddress {
            addr: resolve(&f.addr)?,
            source: dir.join(DAEMON_FILE).display().to_string(),
        })),
        None => Ok(None),
    }
}

/// Send a request to the control API and parse the JSON answer: `(status, body)`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(u16, serde_json::Value), String> {
    let result = match (method, body) {
        ("GET", _) => super::http_get(addr, path, token, timeout),
        (_, Some(b)) => super::http_post_json(addr, path, token, timeout, b),
        (_, None) => super::http_post(addr, path, token, timeout),
    };
    let (status, text) = result.map_err(|e| format!("cannot reach weir at {addr}: {e}"))?;
    if status == 401 {
        return Err(format!("{addr}: missing or wrong bearer token (--http-token or WEIR_HTTP_TOKEN)"));
    }
    let value = serde_json::from_str(&text).map_err(|_| format!("{addr}{path}: HTTP {status}: {}", text.trim()))?;
    Ok((status, value))
}

/// The `error` of an answer, or its whole text.
pub fn error_of(status: u16, answer: &serde_json::Value) -> String {
    match answer["error"].as_str() {
        Some(e) => e.to_string(),
        None => format!("HTTP {status}: {answer}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_file_round_trip_and_stale_files_are_ignored() {
        let dir = tempfile_dir();
        let me = DaemonFile {
            addr: "127.0.0.1:8081".into(),
            pid: std::process::id(),
            version: "x".into(),
            started_ms: 1,
        };
        write_daemon_file(&dir, &me).unwrap();
        assert_eq!(read_daemon_file(&dir), Some(me.clone()));
        let stale = DaemonFile { pid: u32::MAX - 1, ..me };
        write_daemon_file(&dir, &stale).unwrap();
        assert_eq!(read_daemon_file(&dir), None, "a dead process's file is stale");
        remove_daemon_file(&dir); // not ours: stays
        assert!(dir.join(DAEMON_FILE).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("weir-client-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
