//! Test harness: starts the real `choir` binary on loopback and talks HTTP to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod impair;
pub mod net;
pub mod peer;

/// An RTC port range of `n` ports for a daemon: outside the kernel's ephemeral range, every
/// port free for UDP and TCP now (see [`net::free_port_range`]).
pub fn port_range(n: u16) -> (u16, u16) {
    net::free_port_range(n)
}

/// RTC ports per test daemon.
pub const RTC_PORTS: u16 = 300;

/// The `choir` binary with the test defaults (loopback API on a free port, loopback RTC on
/// `rtc`, 2 unpinned shards, debug logs, no rate limit), each unless `extra` sets that flag,
/// then `extra`.
pub fn choir_command(extra: &[&str], rtc: (u16, u16)) -> Command {
    let (min, max) = (rtc.0.to_string(), rtc.1.to_string());
    let defaults = [
        "--listen",
        "127.0.0.1:0",
        "--announced-ip",
        "127.0.0.1",
        "--rtc-listen-ip",
        "127.0.0.1",
        "--rtc-min-port",
        &min,
        "--rtc-max-port",
        &max,
        "--shards",
        "2",
        "--pin",
        "false",
        "--log",
        "choir=debug",
        // Tests make many requests from one address; tests/hardening.rs sets its own limit.
        "--rate-limit",
        "0",
    ];
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choir"));
    for pair in defaults.chunks(2) {
        if !extra.contains(&pair[0]) {
            cmd.args(pair);
        }
    }
    cmd.args(extra);
    cmd
}

/// The sum of the samples whose line starts with `prefix` in a metrics text.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub struct Daemon {
    child: Option<Child>,
    pub base: String,
    pub rtc: (u16, u16),
    stderr: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts choir with 2 shards on 127.0.0.1 and a fresh port range, plus `extra` flags.
    pub fn start(extra: &[&str]) -> Daemon {
        Self::start_with(extra, &[])
    }

    /// Starts choir like [`Daemon::start`] with `env` set. When choir could not bind a port at
    /// start (single-port mode binds its shard ports then; another process may have taken one
    /// since the probe), it is started again on a fresh range, up to 5 times.
    ///
    /// Without `--listen` in `extra` the API listens on a port outside the kernel's ephemeral
    /// range, checked free: a test may restart a node on its address after a SIGKILL, and an
    /// outgoing connection of any process could take a port-0 listener's port meanwhile.
    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let own_rtc = !extra.contains(&"--rtc-min-port");
        let own_api = !extra.contains(&"--listen");
        // A node restarted on its address right after a SIGKILL: the dead process's sockets
        // can outlive it for a moment (io_uring tears its rings down after the exit), so its
        // API port may still be held; wait (bounded) until it is free, and retry on that.
        let given = extra
            .iter()
            .position(|a| *a == "--listen")
            .and_then(|i| extra.get(i + 1))
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
        let retry = |logs: &str| {
            (logs.contains("cannot listen on") && (own_api || logs.contains("already in use")))
                || (own_rtc && net::is_bind_failure(logs))
        };
        for attempt in 1.. {
            if let Some(addr) = given {
                let deadline = Instant::now() + Duration::from_secs(5);
                while std::net::TcpListener::bind(addr).is_err() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let listen = format!("127.0.0.1:{}", net::free_port_range(1).0);
            let mut args = extra.to_vec();
            if own_api {
                args.extend(["--listen", listen.as_str()]);
            }
            match Self::try_start(&args, env) {
                Ok(d) => return d,
                Err(logs) if attempt < 5 && retry(&logs) => {
                    eprintln!(
                        "choir could not bind its ports (attempt {attempt}), retrying: {logs}"
                    );
                }
                Err(logs) => panic!("choir did not report its address within 20 s: {logs}"),
            }
        }
        unreachable!()
    }

    /// One start; on failure, what choir logged.
    fn try_start(extra: &[&str], env: &[(&str, &str)]) -> Result<Daemon, String> {
        let rtc = port_range(RTC_PORTS);
        let mut cmd = choir_command(extra, rtc);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start choir");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (etx, erx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("CHOIR_TEST_LOG").is_some() {
                    eprintln!("[choir] {line}");
                }
                let _ = etx.send(line);
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            // The stderr reader sends every line before it ends (the process is gone).
            let logs: Vec<String> = erx.iter().take(200).collect();
            return Err(format!("{logs:?}"));
        };
        let base = line
            .strip_prefix("choir listening on ")
            .expect("address line")
            .to_string();
        Ok(Daemon {
            child: Some(child),
            base,
            rtc,
            stderr: erx,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/voice/{}", self.base, path.trim_start_matches('/'))
    }

    /// GET → (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        response(
            ureq::get(&self.url(path))
                .timeout(Duration::from_secs(10))
                .call(),
        )
    }

    /// POST JSON → (status, JSON body).
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        response(
            ureq::post(&self.url(path))
                .timeout(Duration::from_secs(10))
                .send_json(body),
        )
    }

    /// POST raw bytes with a content type → (status, JSON body).
    pub fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Value) {
        response(
            ureq::post(&self.url(path))
                .timeout(Duration::from_secs(10))
                .set("Content-Type", "application/json")
                .send_bytes(body),
        )
    }

    /// POST expecting 200; returns the body.
    pub fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, v) = self.post(path, body);
        assert_eq!(status, 200, "POST {path} {body} → {status} {v}");
        v
    }

    pub fn health(&self) -> Value {
        let (status, v) = self.get("health");
        assert_eq!(status, 200, "{v}");
        v
    }

    pub fn stats(&self) -> Value {
        let (status, v) = self.get("stats");
        assert_eq!(status, 200, "{v}");
        v
    }

    /// `GET /metrics` with an optional Accept header → (content type, text).
    pub fn metrics(&self, accept: Option<&str>) -> (String, String) {
        let mut req = ureq::get(&format!("{}/metrics", self.base)).timeout(Duration::from_secs(10));
        if let Some(a) = accept {
            req = req.set("Accept", a);
        }
        let resp = req.call().expect("metrics");
        let ty = resp.header("content-type").unwrap_or_default().to_string();
        (ty, resp.into_string().unwrap())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Lines choir logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// Waits up to `timeout` for `check` to hold, polling every 20 ms.
    pub fn wait_for(&self, timeout: Duration, mut check: impl FnMut(&Daemon) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        check(self)
    }

    /// Waits (at most `timeout`) for the process to exit on its own; kills it past that.
    pub fn wait_exit(mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then wait (at most `timeout`) for the exit status.
    pub fn terminate(self, timeout: Duration) -> Option<ExitStatus> {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        self.wait_exit(timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn response(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(resp) => resp,
        Err(ureq::Error::Status(_, resp)) => resp,
        Err(e) => panic!("HTTP request failed: {e}"),
    };
    let status = resp.status();
    let mut body = String::new();
    resp.into_reader()
        .take(1 << 20)
        .read_to_string(&mut body)
        .unwrap();
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

/// Number of open file descriptors of a process, not counting TCP sockets (the test's own HTTP
/// keep-alive connections come and go with the client's connection pool).
pub fn open_fds(pid: u32) -> usize {
    net::open_fds_except_tcp(pid, |_| true)
}

/// UDP ports bound by a process, from /proc/net/udp{,6} and its fds' socket inodes.
pub fn bound_udp_ports(pid: u32) -> Vec<u16> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    l.to_string_lossy()
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 9 && inodes.contains(cols[9]) {
                if let Some(port) = cols[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                {
                    ports.push(port);
                }
            }
        }
    }
    ports.sort_unstable();
    ports
}

/// A subscription to `GET /events/:channelId/:userId`, read on a background thread.
pub struct EventStream {
    rx: mpsc::Receiver<Value>,
}

impl EventStream {
    /// The next event (its `data:` JSON) within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Value> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Skips events until one of type `kind` arrives (within `timeout` overall).
    pub fn wait_for(&self, kind: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(v) if v["type"] == kind => return Some(v),
                Some(_) => continue,
                None => return None,
            }
        }
        None
    }
}

impl Daemon {
    pub fn events(&self, channel: &str, user: &str) -> EventStream {
        let resp = ureq::get(&self.url(&format!("events/{channel}/{user}")))
            .timeout(Duration::from_secs(120))
            .call()
            .expect("subscribe to events");
        assert_eq!(resp.header("content-type"), Some("text/event-stream"));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(resp.into_reader())
                .lines()
                .map_while(Result::ok)
            {
                if let Some(data) = line.strip_prefix("data: ") {
                    if let Ok(v) = serde_json::from_str(data) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        EventStream { rx }
    }
}
