//! The control plane: a hyper 1 HTTP/1.1 server (keep-alive) on a glommio executor, serving the
//! voice API and its push channel. It holds no media state: every operation is a command to the
//! room's shard.

pub mod auth;
pub mod cascade;
mod conn;
mod demo;
pub mod guard;
pub(crate) mod input;
pub mod limits;
pub mod metrics;
pub mod routes;
mod sse;

use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;

use crate::sfu::api::RoomEvent;
use crate::shard::{Command, ShardHandle};

pub use crate::http::{Body, RequestBody};
pub use input::{parse_json, MAX_BODY};
pub use routes::Ctx;

/// How long connections get to finish after a shutdown starts.
const DRAIN: Duration = Duration::from_secs(2);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

/// What the HTTP side serves besides the voice API's rules (set from the configuration).
pub struct Site {
    /// `Access-Control-Allow-Origin` (`None`: no CORS headers).
    pub cors_origin: Option<String>,
    /// Serve the try-it page at `/` (`--demo-page`).
    pub demo_page: bool,
}

/// Runs the control server until `stop` fires (or is dropped), then shuts the shards down and
/// drains connections. Must run inside a glommio executor. An error: cluster mode's start-up
/// checks refused the node (a setting to fix: exit status 2).
pub async fn serve(
    listener: TcpListener,
    shards: Vec<ShardHandle>,
    site: Site,
    events: flume::Receiver<RoomEvent>,
    stop: flume::Receiver<()>,
    guard: guard::Guard,
    cluster: crate::cluster::Cluster,
) -> Result<(), String> {
    let Site {
        cors_origin,
        demo_page,
    } = site;
    let ctx = Rc::new(Ctx {
        guard,
        demo_page,
        shards,
        hub: Default::default(),
        cors_origin: cors_origin.and_then(|o| HeaderValue::from_str(&o).ok()),
        shutting_down: Default::default(),
        started: std::time::Instant::now(),
        cluster,
    });
    let cluster_tasks = crate::cluster::Cluster::start(&ctx);
    // Connections watch this: dropping the sender tells them all to finish.
    let (closing_tx, closing_rx) = flume::bounded::<()>(0);

    let pump = glommio::spawn_local({
        let ctx = ctx.clone();
        let events = events.clone();
        async move {
            while let Ok(ev) = events.recv_async().await {
                ctx.hub.borrow_mut().dispatch(&ev);
                crate::cluster::on_room_event(&*ctx, &ev);
            }
        }
    });
    let keepalive = glommio::spawn_local({
        let ctx = ctx.clone();
        async move {
            loop {
                glommio::timer::sleep(KEEPALIVE_EVERY).await;
                ctx.hub.borrow_mut().keepalive();
            }
        }
    });

    let open = Rc::new(std::cell::Cell::new(0usize));
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv_async().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        // Over the client's connection cap: closed at once (counted), nothing read; unless the
        // address is a node's, whose requests must then carry a signed hop header.
        let Some(counted) = ctx.guard.admit(peer, ctx.cluster.may_be_node(peer)) else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let closing = closing_rx.clone();
        let open = open.clone();
        open.set(open.get() + 1);
        glommio::spawn_local(async move {
            serve_connection(stream, peer, ctx.clone(), closing, !counted).await;
            if counted {
                ctx.guard.disconnected(peer);
            }
            open.set(open.get() - 1);
        })
        .detach();
    }

    tracing::info!("shutting down: closing rooms");
    ctx.shutting_down.set(true);
    drop(listener);
    for shard in &ctx.shards {
        let _ = shard.call(Command::Shutdown).await;
    }
    // Let the shards' last events (participantLeft...) reach subscribers, then end the streams.
    while let Ok(ev) = events.try_recv() {
        ctx.hub.borrow_mut().dispatch(&ev);
    }
    drop(pump);
    drop(keepalive);
    drop(cluster_tasks);
    ctx.cluster.stop().await;
    ctx.hub.borrow_mut().close_all();
    drop(closing_tx);
    let deadline = std::time::Instant::now() + DRAIN;
    while open.get() > 0 && std::time::Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    if open.get() > 0 {
        tracing::warn!(
            open = open.get(),
            "connections still open after {DRAIN:?}; closing them"
        );
    }
    ctx.cluster.fatal().map_or(Ok(()), Err)
}

impl crate::cluster::Host for Ctx {
    fn cluster(&self) -> &crate::cluster::Cluster {
        &self.cluster
    }

    fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    fn max_rooms(&self) -> u32 {
        self.guard.limits.max_rooms
    }

    fn has_streams(&self, channel: &str) -> bool {
        self.hub.borrow().has_streams(channel)
    }

    fn close_room(&self, channel: &str, reason: &str) {
        self.hub.borrow_mut().close_room(channel, reason);
    }

    fn open_room<'a>(&'a self, channel: &'a str) -> crate::cluster::HostFuture<'a, ()> {
        Box::pin(async move {
            let command = Command::OpenRoom {
                channel_id: channel.to_string(),
            };
            self.shards[crate::shard::shard_for(channel, self.shards.len())]
                .call(command)
                .await
                .map(|_| ())
        })
    }

    fn cascade<'a>(
        &'a self,
        channel: &'a str,
        command: crate::shard::LinkCommand,
    ) -> crate::cluster::HostFuture<'a, crate::shard::Reply> {
        Box::pin(cascade::call(&self.shards, channel, command))
    }
}

/// Serves one API connection (`nodes_only`: admitted over its address's connection cap, for
/// signed node-to-node requests only): HTTP/1.1 keep-alive, a deadline on each request head (from the
/// connection's start or the end of the previous exchange: an idle connection is closed too),
/// then a lingering close.
async fn serve_connection(
    stream: glommio::net::TcpStream,
    peer: std::net::IpAddr,
    ctx: Rc<Ctx>,
    closing: flume::Receiver<()>,
    nodes_only: bool,
) {
    let header_timeout = ctx.guard.limits.header_timeout;
    let svc = {
        let ctx = ctx.clone();
        service_fn(move |req| Box::pin(routes::handle(req, ctx.clone(), peer, nodes_only)))
    };
    let mut conn = http1::Builder::new()
        .keep_alive(true)
        .timer(conn::GlommioTimer)
        .header_read_timeout(header_timeout)
        .serve_connection(crate::http::io::HyperIo(stream), svc);
    let mut closing = pin!(closing.into_recv_async());
    let mut draining = false;
    let result = std::future::poll_fn(|cx| {
        if !draining && closing.as_mut().poll(cx).is_ready() {
            draining = true;
            std::pin::Pin::new(&mut conn).graceful_shutdown();
        }
        conn.poll_without_shutdown(cx)
    })
    .await;
    if let Err(e) = result {
        if e.is_timeout() {
            ctx.guard.counters.borrow_mut().header_timeouts += 1;
            tracing::debug!(%peer, "connection closed: no whole request head within {header_timeout:?}");
        } else {
            tracing::debug!("connection ended: {e}");
        }
    }
    conn::linger(conn.into_parts().io.0).await;
}
