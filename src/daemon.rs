//! The process: N shards on their own threads, the control server on the main thread, signals.

use std::net::SocketAddr;

use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{Config, PortMode};
use crate::shard::{self, ShardSetup};
use crate::{control, dtls};

/// Runs choir until SIGTERM/SIGINT. Returns an error line for start-up failures.
pub fn run(config: Config) -> Result<(), String> {
    crate::faults::log_panics();
    if config.auth.is_none() {
        tracing::warn!(
            "NO AUTH: the voice API is open: anyone who reaches {} can act as any user in any room. Set CHOIR_AUTH_SECRET (or --auth-secret-file) in production",
            config.listen
        );
    }
    let room_limits = crate::sfu::RoomLimits {
        max_rooms: config.limits.rooms_per_shard(config.shards),
        max_room_participants: config.limits.max_room_participants,
        join_timeout: config.join_timeout,
    };
    let cpus = allowed_cpus();
    let dtls_config = dtls::dtls_config();
    let (events_tx, events_rx) = flume::unbounded();
    let mut shards = Vec::new();
    let mut threads = Vec::new();
    for index in 0..config.shards {
        let cpu = if config.pin {
            cpus.get(index).copied()
        } else {
            None
        };
        let ports = match config.port_mode {
            PortMode::PerTransport => config.port_slice(index),
            PortMode::Single => (
                config.rtc_min_port + index as u16,
                config.rtc_min_port + index as u16,
            ),
        };
        let setup = ShardSetup {
            index,
            cpu,
            ports,
            mode: config.port_mode,
            listen: config
                .listen_ips
                .iter()
                .map(|l| (l.ip, l.announced))
                .collect(),
            udp: config.enable_udp,
            tcp: config.enable_tcp,
            consent_timeout: config.consent_timeout,
            dtls_timeout: config.dtls_timeout,
            consumer_hold: config.consumer_hold,
            dtls_config: dtls_config.clone(),
            events: events_tx.clone(),
            limits: room_limits,
        };
        let (handle, thread) = shard::spawn(setup).map_err(|e| e.to_string())?;
        shards.push(handle);
        threads.push(thread);
    }
    drop(events_tx);

    // SIGTERM / SIGINT → stop the control server, which shuts the shards down.
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let stopping = crate::faults::Stopping::default();
    let shard_failed = crate::faults::Failed::default();
    let threads = crate::faults::watch_shards(
        threads,
        stop_tx.clone(),
        stopping.clone(),
        shard_failed.clone(),
    )?;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let signal_handle = signals.handle();
    std::thread::Builder::new()
        .name("choir-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                stopping.set();
                tracing::info!(signal = sig, "stopping");
                let _ = stop_tx.send(());
            }
        })
        .map_err(|e| e.to_string())?;

    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name("choir-control")
        .make()
        .map_err(|e| format!("cannot start the control executor: {e}"))?;
    let listen = config.listen;
    let cors = config.cors_origin.clone();
    let shard_count = shards.len();
    let result = executor.run(async move {
        let listener = glommio::net::TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local: SocketAddr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(%local, shards = shard_count, announced_ip = %config.announced_ip, ports = ?(config.rtc_min_port, config.rtc_max_port), "choir ready");
        // A plain line for scripts and tests that start choir on port 0.
        println!("choir listening on http://{local}");
        sd_notify("READY=1");
        let guard = control::guard::Guard::new(
            config.auth.clone(),
            config.metrics_token.clone(),
            config.limits,
            config.test_faults,
        );
        control::serve(listener, shards, cors, events_rx, stop_rx, guard).await;
        sd_notify("STOPPING=1");
        Ok::<(), String>(())
    });
    signal_handle.close();
    for t in threads {
        let _ = t.join();
    }
    result?;
    crate::faults::exit_status(&shard_failed)
}

/// The CPUs this process may run on (sched_getaffinity), in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// systemd readiness (`Type=notify`): a datagram to $NOTIFY_SOCKET, if set.
fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => UnixAddr::from_abstract_name(abstract_name.as_bytes()),
        None => UnixAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = sent {
        tracing::warn!("sd_notify({state}) failed: {e}");
    }
}
