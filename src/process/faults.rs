//! What happens when a shard dies: it is not restarted in place (its rooms, sockets and
//! sessions are gone, and a process with one shard missing answers part of its rooms only).
//! Instead the panic is logged, `/health` turns unhealthy (503, `failedShards`), and after a
//! short grace (so that health checks and the log see it) the process shuts down like on
//! SIGTERM and exits with status 1: systemd's `Restart=on-failure` starts a whole new one.
//!
//! Tests make a shard panic with the hidden `--test-faults` flag (`CHOIR_TEST_FAULTS=1`),
//! which enables `POST /api/voice/test/panic-shard/:n`. It is off by default; never enable it
//! in production.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the process keeps answering (health: unhealthy) after a shard died.
pub const GRACE: Duration = Duration::from_secs(1);

/// Shared between the signal thread and the shard watchers.
#[derive(Clone, Default)]
pub struct Stopping(Arc<AtomicBool>);

impl Stopping {
    /// A deliberate stop began (signal): shards ending from now on are not failures.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Set when a shard ended on its own.
#[derive(Clone, Default)]
pub struct Failed(Arc<AtomicBool>);

/// Logs panics through `tracing` (one line, with the thread's name and the location), so that
/// they reach journald in the configured format.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        tracing::error!(thread, %location, "panic: {message}");
    }));
}

/// Watches the shards' threads: one ending while no stop was asked for is a failure, which
/// stops the process after [`GRACE`]. Returns the watchers (join them instead of `threads`).
pub fn watch_shards(
    threads: Vec<JoinHandle<()>>,
    stop: flume::Sender<()>,
    stopping: Stopping,
    failed: Failed,
) -> Result<Vec<JoinHandle<()>>, String> {
    threads
        .into_iter()
        .enumerate()
        .map(|(index, thread)| {
            let (stop, stopping, failed) = (stop.clone(), stopping.clone(), failed.clone());
            std::thread::Builder::new()
                .name(format!("choir-shard-{index}-watch"))
                .spawn(move || {
                    let _ = thread.join();
                    if stopping.is_set() {
                        return;
                    }
                    failed.0.store(true, Ordering::SeqCst);
                    tracing::error!(
                        shard = index,
                        "shard stopped unexpectedly: health is unhealthy; choir exits in {GRACE:?} so that the service manager restarts it"
                    );
                    std::thread::sleep(GRACE);
                    stopping.set();
                    let _ = stop.try_send(());
                })
                .map_err(|e| format!("cannot start a shard watcher: {e}"))
        })
        .collect()
}

/// The daemon's result once everything stopped: an error if a shard had failed.
pub fn exit_status(failed: &Failed) -> Result<(), String> {
    if failed.0.load(Ordering::SeqCst) {
        Err("a shard failed (see the log); exiting with status 1".into())
    } else {
        Ok(())
    }
}
