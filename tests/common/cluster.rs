//! The cluster tests' harness: nodes on a test Redis, the voice API over HTTP (with the
//! node that served each reply), and waiting for the cluster to settle.
#![allow(dead_code)]

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use choir::control::auth::{claims, Secret};
use serde_json::{json, Value};

use crate::common::peer::Peer;
use crate::common::{self, Daemon};
use crate::redis_server::Redis;

pub const SECRET: &str = "cluster-test-secret-0123456789abcdef-01234";
/// The cluster secret of [`node`]'s nodes.
pub const CLUSTER_SECRET: &str = "cluster-hop-secret-0123456789abcdef-56789";

/// Opens `GET /api/voice/<path>` on `base` and reads only its status line: the connection
/// (an event stream's, say) stays open until the returned stream is dropped.
pub fn open_stream(base: &str, path: &str) -> (u16, std::net::TcpStream) {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /api/voice/{path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("a status line");
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (status, s)
}

/// A node of the test cluster: `node-<i>` on the test Redis.
pub fn node(redis: &Redis, i: usize, extra: &[&str]) -> Daemon {
    let id = format!("node-{i}");
    let mut args = vec!["--node-id", id.as_str(), "--shards", "1"];
    args.extend_from_slice(extra);
    Daemon::start_with(
        &args,
        &[
            ("CHOIR_REDIS_URL", &redis.url()),
            ("CHOIR_CLUSTER_SECRET", CLUSTER_SECRET),
        ],
    )
}

/// Redis and `n` nodes, all registered (each lists them all).
pub fn cluster(n: usize) -> (Redis, Vec<Daemon>) {
    let redis = Redis::start();
    let nodes: Vec<Daemon> = (1..=n).map(|i| node(&redis, i, &[])).collect();
    for d in &nodes {
        assert!(
            until(Duration::from_secs(10), || listed(d).len() == n),
            "{} lists {:?}",
            d.base,
            listed(d)
        );
    }
    (redis, nodes)
}

/// A reply: status, JSON body, and the node that served it (`X-Choir-Node`).
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub node: Option<String>,
    /// Its `X-Choir-Region` header (the region of the node that served it, when it has one).
    pub region: Option<String>,
    /// Its `Retry-After` header.
    pub retry_after: Option<String>,
}

pub fn call(
    d: &Daemon,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    call_at(&d.base, method, path, body, headers)
}

/// [`call`] by base URL (from any thread).
pub fn call_at(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Reply {
    let url = format!("{base}/api/voice/{path}");
    let mut req = ureq::request(method, &url).timeout(Duration::from_secs(10));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let r = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let node = resp.header("x-choir-node").map(String::from);
    let region = resp.header("x-choir-region").map(String::from);
    let retry_after = resp.header("retry-after").map(String::from);
    let mut text = String::new();
    resp.into_reader()
        .take(1 << 20)
        .read_to_string(&mut text)
        .unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply {
        status,
        body,
        node,
        region,
        retry_after,
    }
}

pub fn get(d: &Daemon, path: &str) -> Reply {
    call(d, "GET", path, None, &[])
}

pub fn post(d: &Daemon, path: &str, body: &Value) -> Reply {
    call(d, "POST", path, Some(body), &[])
}

/// Ids of the nodes `d`'s `/cluster` lists.
pub fn listed(d: &Daemon) -> Vec<String> {
    let r = get(d, "cluster");
    assert_eq!(r.status, 200, "{}", r.body);
    let mut ids: Vec<String> = r.body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

pub fn until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// Opens rooms `prefix-0`, `prefix-1`... through `via` until one is placed on `owner`.
pub fn channel_on(via: &Daemon, owner: &str, prefix: &str) -> String {
    for i in 0..60 {
        let c = format!("{prefix}-{i}");
        let r = get(via, &format!("rtp-capabilities/{c}"));
        assert_eq!(r.status, 200, "{}", r.body);
        if r.node.as_deref() == Some(owner) {
            return c;
        }
    }
    panic!("no room of 60 was placed on {owner}");
}

pub fn sigkill(d: Daemon) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
    let _ = d.wait_exit(Duration::from_secs(5));
}

/// SIGKILL without waiting for the exit (the caller keeps driving its peers meanwhile; the
/// process is reaped when `d` is dropped).
pub fn sigkill_now(d: &Daemon) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
}

/// SIGSTOP: the node stalls (its sockets stay open).
pub fn sigstop(d: &Daemon) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(d.pid() as i32, libc::SIGSTOP) };
}

/// SIGCONT after [`sigstop`].
pub fn sigcont(d: &Daemon) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(d.pid() as i32, libc::SIGCONT) };
}

pub fn create_transport(via: &Daemon, channel: &str, user: &str) -> Reply {
    post(
        via,
        "create-transport",
        &json!({"channelId": channel, "userId": user, "direction": "send"}),
    )
}

pub fn ports_of(transport: &Value) -> Vec<u16> {
    transport["iceCandidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["port"].as_u64().unwrap() as u16)
        .collect()
}

/// Count of packets missing between the first and the last one `p` received from `sender`.
pub fn gaps(p: &Peer, sender: u8) -> usize {
    let mut n: Vec<u16> = p.received_from(sender).iter().map(|g| g.n).collect();
    n.sort_unstable();
    n.dedup();
    match (n.first(), n.last()) {
        (Some(&lo), Some(&hi)) => usize::from(hi - lo) + 1 - n.len(),
        _ => 0,
    }
}

pub fn choir_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_choir"));
    cmd.args(["--listen", "127.0.0.1:0", "--shards", "1", "--pin", "false"]);
    let (lo, hi) = common::port_range(100);
    cmd.args([
        "--rtc-min-port",
        &lo.to_string(),
        "--rtc-max-port",
        &hi.to_string(),
    ]);
    cmd.args(args).env_remove("CHOIR_REDIS_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run choir");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, started.elapsed())
}

pub fn token(channel: &str, user: &str) -> String {
    Secret::new(SECRET.as_bytes()).unwrap().mint(&claims(
        channel,
        user,
        Duration::from_secs(600),
        SystemTime::now(),
    ))
}
