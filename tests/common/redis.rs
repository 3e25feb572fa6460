//! A real `redis-server` for the cluster tests: started on a free loopback port outside the
//! kernel's ephemeral range, in memory only, with a password; killed when dropped.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "choir-test-password";

/// A loopback port free now for UDP and TCP, outside the kernel's ephemeral range (so no
/// outgoing connection of this machine takes it meanwhile): see `net::free_port_range`.
pub fn free_port() -> u16 {
    crate::common::net::free_port_range(1).0
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    /// Starts redis-server with [`PASSWORD`] and waits until it answers.
    /// A port taken between the probe and redis-server's bind (it then exits) is retried on
    /// a fresh port, up to 5 times.
    pub fn start() -> Redis {
        for _ in 0..5 {
            let port = free_port();
            let dir =
                std::env::temp_dir().join(format!("choir-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut r = Redis {
                child: None,
                port,
                dir,
            };
            if r.spawn() {
                return r;
            }
        }
        panic!("redis-server exited at start 5 times (ports taken?)");
    }

    /// Starts redis-server on `self.port` and waits until it answers; false when it exited
    /// (its port taken), panics when it neither answers nor exits within 10 s.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", PASSWORD])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server did not answer on port {} within 10 s",
            self.port
        );
    }

    /// `redis://:password@127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect to the test Redis")
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut con).is_ok()
    }

    /// The owner the directory has for `channel`.
    pub fn owner(&self, channel: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(format!("choir:room:{channel}"))
            .query(&mut self.client())
            .unwrap()
    }

    /// SIGSTOP: Redis stalls (connections stay open, nothing is answered).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Redis::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// `FLUSHALL`: Redis forgets everything, connections stay open.
    pub fn flushall(&self) {
        let _: () = redis::cmd("FLUSHALL").query(&mut self.client()).unwrap();
    }

    /// Whether node `id` wrote its entry (since the last flush or restart).
    pub fn has_node(&self, id: &str) -> bool {
        let n: i64 = redis::cmd("EXISTS")
            .arg(format!("choir:node:{id}"))
            .query(&mut self.client())
            .unwrap();
        n == 1
    }

    /// SIGKILL (Redis dies with everything in memory).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.spawn(),
            "redis-server exited at restart on port {}",
            self.port
        );
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
