//! The process: N shards on their own threads, the control server on the main thread, signals.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::Placement;

use crate::process::config::{Config, PortMode};
use crate::shard::{self, ShardSetup};
use crate::{cluster, control, wire::dtls};

/// Why choir stopped with an error: one line, and the exit status (2: a setting to fix, as for
/// an invalid value; 1: anything else).
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, code: 1 }
    }
}

/// Runs choir until SIGTERM/SIGINT. Returns an error line for start-up failures.
pub fn run(config: Config) -> Result<(), Failure> {
    crate::process::faults::log_panics();
    if config.auth.is_none() {
        tracing::warn!(
            "NO AUTH: the voice API is open: anyone who reaches {} can act as any user in any room. Set CHOIR_AUTH_SECRET (or --auth-secret-file) in production",
            config.listen
        );
    }
    warn_if_unreachable(&config);
    // Bound first, so a taken port ends the start before anything else runs.
    let api = bind_api(config.listen)?;
    let room_limits = crate::sfu::RoomLimits {
        max_rooms: config.limits.rooms_per_shard(config.shards),
        max_room_participants: config.limits.max_room_participants,
        join_timeout: config.join_timeout,
        speaking: config.speaking,
    };
    // Cluster mode: Redis must answer (and accept the password) before anything starts.
    let store = match &config.cluster.redis_url {
        Some(url) => Some(crate::cluster::Store::connect(url)?),
        None => None,
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
            link_port: config.cluster.link_port.map(|p| p + index as u16),
        };
        let (handle, thread) = shard::spawn(setup).map_err(|e| e.to_string())?;
        shards.push(handle);
        threads.push(thread);
    }
    drop(events_tx);

    // SIGTERM / SIGINT → stop the control server, which shuts the shards down. In cluster
    // mode the first SIGTERM drains instead; a second one, or SIGINT, stops.
    let (stop_tx, stop_rx) = flume::bounded::<()>(1);
    let (drain_tx, drain_rx) = flume::bounded::<()>(1);
    let drains = store.is_some();
    let stopping = crate::process::faults::Stopping::default();
    let shard_failed = crate::process::faults::Failed::default();
    let threads = crate::process::faults::watch_shards(
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
    let cluster_stop = (stop_tx.clone(), stopping.clone());
    std::thread::Builder::new()
        .name("choir-signals".into())
        .spawn(move || {
            let mut draining = false;
            for sig in signals.forever() {
                if drains && !draining && sig == signal_hook::consts::SIGTERM {
                    draining = true;
                    tracing::info!(signal = sig, "draining");
                    let _ = drain_tx.try_send(());
                    continue;
                }
                stopping.set();
                tracing::info!(signal = sig, "stopping");
                let _ = stop_tx.try_send(());
                break;
            }
        })
        .map_err(|e| e.to_string())?;

    let executor = crate::shard::executor(Placement::Unbound, "choir-control")
        .make()
        .map_err(|e| format!("cannot start the control executor: {e}"))?;
    let listen = config.listen;
    let cors = config.cors_origin.clone();
    let shard_count = shards.len();
    let result = executor.run(async move {
        // SAFETY: the fd comes from the listening socket bound above, handed over to glommio.
        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(api.into_raw_fd()) };
        let local: SocketAddr = listener.local_addr().map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        tracing::info!(%local, shards = shard_count, announced_ip = %config.announced_ip, ports = ?(config.rtc_min_port, config.rtc_max_port), "choir ready");
        // A plain line for scripts and tests that start choir on port 0.
        // (A closed stdout must not stop choir either: the line is dropped.)
        let _ = writeln!(std::io::stdout(), "choir listening on http://{local}");
        sd_notify("READY=1");
        let guard = control::guard::Guard::new(
            config.auth.clone(),
            config.metrics_token.clone(),
            config.limits,
            config.test_faults,
        );
        let mut identity = cluster::Identity::new(&config.cluster, local, config.announced_ip);
        // The shards bind their link ports on the RTC listen IPs: peers send to the first
        // one's announced address (with --listen-ips, not necessarily --announced-ip).
        if let Some(first) = config.listen_ips.first() {
            identity.announced_ip = first.announced;
        }
        let setup = store.map(|store| cluster::Setup {
            store,
            config: config.cluster.clone(),
            drain: drain_rx,
            stop: cluster_stop.0,
            stopping: Box::new(move || cluster_stop.1.set()),
        });
        let cluster = cluster::Cluster::new(identity, setup);
        let site = control::Site {
            cors_origin: cors,
            demo_page: config.demo_page,
        };
        let served = control::serve(listener, shards, site, events_rx, stop_rx, guard, cluster).await;
        sd_notify("STOPPING=1");
        Ok::<Result<(), String>, String>(served)
    });
    signal_handle.close();
    for t in threads {
        let _ = t.join();
    }
    result?.map_err(|message| Failure { message, code: 2 })?;
    Ok(crate::process::faults::exit_status(&shard_failed)?)
}

/// Binds the API's listening socket. Not with `SO_REUSEPORT` (glommio's own `bind` sets it, and
/// then a second choir on the same port starts and the kernel splits connections between the
/// two): a port another process holds ends the start with one clear line (exit status 1).
/// `SO_REUSEADDR` lets a restart bind while old connections sit in TIME_WAIT.
fn bind_api(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    use socket2::{Domain, Socket, Type};
    let fail = |e: std::io::Error| {
        match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            "cannot listen on {addr}: the address is already in use (another choir, or another process, holds it; set CHOIR_LISTEN / --listen)"
        ),
        _ => format!("cannot listen on {addr}: {e}"),
    }
    };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    Ok(socket.into())
}

/// A loud warning when candidates will announce a loopback address while the RTC sockets bind
/// a wildcard one: browsers on other hosts get candidates they cannot reach. That is what the
/// default announced address falls back to when no interface lists an IPv4 address, or when
/// the interfaces cannot be read (under systemd: `RestrictAddressFamilies` without
/// `AF_NETLINK`).
fn warn_if_unreachable(config: &Config) {
    for l in &config.listen_ips {
        if l.ip.is_unspecified() && l.announced.is_loopback() {
            tracing::warn!(
                bind = %l.ip,
                announced = %l.announced,
                "ANNOUNCED IP IS LOOPBACK: RTC sockets bind {} but candidates announce {}, which browsers on other hosts cannot reach. Set SFU_ANNOUNCED_IP (or SFU_LISTEN_IPS) to this host's reachable address. (The default, the first non-loopback IPv4 address, falls back to 127.0.0.1 when none can be found; under systemd, RestrictAddressFamilies must allow AF_NETLINK to list the interfaces.)",
                l.ip,
                l.announced,
            );
        }
    }
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
