//! The control plane: a hyper 1 HTTP/1.1 server (keep-alive) on a glommio executor, serving the
//! voice API and its push channel. It holds no media state: every operation is a command to the
//! room's shard.

mod demo;
pub mod guard;
mod io;
pub mod limits;
pub mod routes;
mod sse;

use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use glommio::net::TcpListener;
use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;

use crate::api::RoomEvent;
use crate::shard::{Command, ShardHandle};

pub use routes::{parse_json, Ctx, MAX_BODY};

/// Response body type of every route (JSON or an SSE stream).
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// How long connections get to finish after a shutdown starts.
const DRAIN: Duration = Duration::from_secs(2);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

/// Runs the control server until `stop` fires (or is dropped), then shuts the shards down and
/// drains connections. Must run inside a glommio executor.
pub async fn serve(
    listener: TcpListener,
    shards: Vec<ShardHandle>,
    cors_origin: Option<String>,
    events: flume::Receiver<RoomEvent>,
    stop: flume::Receiver<()>,
    guard: guard::Guard,
    demo_page: bool,
) {
    let ctx = Rc::new(Ctx {
        guard,
        demo_page,
        shards,
        hub: Default::default(),
        cors_origin: cors_origin.and_then(|o| HeaderValue::from_str(&o).ok()),
        shutting_down: Default::default(),
        started: std::time::Instant::now(),
    });
    // Connections watch this: dropping the sender tells them all to finish.
    let (closing_tx, closing_rx) = flume::bounded::<()>(0);

    let pump = glommio::spawn_local({
        let ctx = ctx.clone();
        let events = events.clone();
        async move {
            while let Ok(ev) = events.recv_async().await {
                ctx.hub.borrow_mut().dispatch(&ev);
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
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let closing = closing_rx.clone();
        let open = open.clone();
        open.set(open.get() + 1);
        glommio::spawn_local(async move {
            serve_connection(stream, ctx, closing).await;
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
}

async fn serve_connection(
    stream: glommio::net::TcpStream,
    ctx: Rc<Ctx>,
    closing: flume::Receiver<()>,
) {
    let peer = stream
        .peer_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let svc = service_fn(move |req| routes::handle(req, ctx.clone(), peer));
    let mut conn = pin!(http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io::HyperIo(stream), svc));
    let mut closing = pin!(closing.into_recv_async());
    let mut draining = false;
    let result = std::future::poll_fn(|cx| {
        if !draining && closing.as_mut().poll(cx).is_ready() {
            draining = true;
            conn.as_mut().graceful_shutdown();
        }
        match conn.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}
