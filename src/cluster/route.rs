//! The control plane's hook: before a route runs, a request naming a channel is sent to the
//! channel's owner when that is another node, and served here otherwise.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::directory::Place;
use super::proxy::{within, ProxyError};
use super::store::{Answer, Op};
use super::{Cluster, Live, HOP_HEADER, NODE_HEADER, REDIS_TIMEOUT, REGION_HEADER, TTL};
use crate::http::{Body, RequestBody, MAX_BODY};
use crate::sfu::api::ApiError;

/// A proxied request gets the owner's whole answer within this...
const DEADLINE: Duration = Duration::from_millis(1500);
/// ...and its answer or a 503 within this, the registry's word on a silent owner included
/// (even with Redis stalled too).
const BUDGET: Duration = Duration::from_millis(1900);
/// Events buffered per proxied stream.
const STREAM_QUEUE: usize = 256;
/// Request headers passed to the owner (plus the hop header); the rest are this hop's.
const PASSED: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::USER_AGENT,
];
/// Reply headers passed back.
const RETURNED: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CACHE_CONTROL,
    header::WWW_AUTHENTICATE,
    header::RETRY_AFTER,
];

/// Where the route goes on.
pub enum Routed {
    /// Served here: the request, its body possibly read already.
    Local(Request<RequestBody>),
    /// The owner's reply.
    Remote(Response<Body>),
}

/// The channelId of a POST body, if it has one.
#[derive(serde::Deserialize)]
struct Named {
    #[serde(rename = "channelId")]
    channel_id: Option<String>,
}

impl Cluster {
    /// Routes a request to its channel's owner. `segs`: the path under `/api/voice/`;
    /// `authorize`: whether the request's token (already checked) covers a channel.
    pub async fn route(
        &self,
        req: Request<Incoming>,
        segs: &[&str],
        authorize: impl FnOnce(&str) -> Result<(), ApiError>,
        client: std::net::IpAddr,
    ) -> Result<Routed, ApiError> {
        let Some(live) = &self.live else {
            return Ok(Routed::Local(req.map(Either::Left)));
        };
        let (channel, req) = match (req.method(), segs) {
            (&Method::GET, ["rtp-capabilities" | "producers" | "events", c, ..]) => {
                (c.to_string(), req.map(Either::Left))
            }
            (&Method::POST, [_]) => {
                crate::http::check_declared_length(req.headers())?;
                let (parts, body) = req.into_parts();
                let bytes = read_body(body).await?;
                let named = serde_json::from_slice::<Named>(&bytes)
                    .ok()
                    .and_then(|n| n.channel_id);
                let req = Request::from_parts(parts, Either::Right(Full::new(bytes)));
                match named {
                    Some(c) => (c, req),
                    None => return Ok(Routed::Local(req)),
                }
            }
            _ => return Ok(Routed::Local(req.map(Either::Left))),
        };
        // Bad ids and requests outside the token are refused here, as the route would.
        if crate::http::check_id("channelId", &channel).is_err() {
            return Ok(Routed::Local(req));
        }
        authorize(&channel)?;
        self.registered(live).await?;
        let hop = req.headers().contains_key(HOP_HEADER);
        // Only the requests that create a room place it; the others look its owner up.
        let place = matches!(segs[0], "rtp-capabilities" | "create-transport");
        let mut owner = match self.locate(live, &channel, hop, place).await? {
            Place::Here => return Ok(Routed::Local(req)),
            Place::Node(id) => id,
        };
        let events = segs[0] == "events";
        let (parts, body) = req.into_parts();
        let body = match body {
            Either::Left(_) => Bytes::new(),
            Either::Right(full) => full
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default(),
        };
        let started = Instant::now();
        let deadline = started + DEADLINE;
        // At most one retry: after the owner said it does not own the channel, or when it
        // does not answer and the registry says it is gone.
        for attempt in 0..2 {
            let url = match self.node_url(live, &owner) {
                Some(u) => u,
                None => return Err(unreachable(&owner, "not in the registry")),
            };
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut out = Request::builder()
                .method(parts.method.clone())
                .uri(target)
                .header(header::HOST, url.trim_start_matches("http://"))
                .header(
                    HOP_HEADER,
                    self.hop_header(live, &parts.method, target, client),
                )
                .body(Full::new(body.clone()))
                .map_err(|e| ApiError::bad_request(format!("cannot forward: {e}")))?;
            for name in PASSED {
                if let Some(v) = parts.headers.get(&name) {
                    out.headers_mut().insert(name, v.clone());
                }
            }
            let sent = if events {
                match live.pool.stream(&url, out, deadline).await {
                    // A refusal (401, 429...) is a small JSON reply: relayed whole.
                    Ok(r) if r.status() != StatusCode::OK => {
                        let (head, body) = r.into_parts();
                        let bytes = within(
                            deadline,
                            http_body_util::Limited::new(body, 1 << 16).collect(),
                        )
                        .await
                        .ok()
                        .and_then(|b| b.ok())
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                        Ok(Response::from_parts(head, Either::Right(Full::new(bytes))))
                    }
                    other => other.map(|r| r.map(Either::Left)),
                }
            } else {
                live.pool
                    .request(&url, out, deadline)
                    .await
                    .map(|r| r.map(Either::Right))
            };
            let retry = attempt == 0;
            match sent {
                Ok(resp) if resp.status() == StatusCode::MISDIRECTED_REQUEST && retry => {
                    self.count(live, "421");
                    self.forget_owner(live, &channel);
                    match self.resolve(live, &channel, place).await? {
                        Place::Here => return Ok(Routed::Local(local(parts, body))),
                        Place::Node(id) => owner = id,
                    }
                }
                Ok(resp) => {
                    self.count(live, resp.status().as_str());
                    return Ok(Routed::Remote(self.relay(live, &owner, resp, events)));
                }
                Err(e) => {
                    self.count(live, "unreachable");
                    let left = (started + BUDGET).saturating_duration_since(Instant::now());
                    let gone = retry
                        && !left.is_zero()
                        && matches!(
                            live.store
                                .call(Op::Alive { id: owner.clone() }, left.min(REDIS_TIMEOUT))
                                .await,
                            Ok(Answer::Alive(false))
                        );
                    if !gone {
                        return Err(unreachable(&owner, &e.to_string()));
                    }
                    tracing::info!(node = %owner, channel = %channel, "owner gone: placing the room again");
                    self.forget_owner(live, &channel);
                    let lost = std::mem::take(&mut owner);
                    match self.resolve(live, &channel, place).await? {
                        Place::Here => return Ok(Routed::Local(local(parts, body))),
                        Place::Node(id) => owner = id,
                    }
                    if Instant::now() >= deadline {
                        return Err(ApiError::unavailable(format!(
                            "the node that owned this room ({lost}) is gone and did not answer; the room is on {owner} now: retry"
                        )));
                    }
                }
            }
        }
        Err(unreachable(&owner, "the directory and the owner disagree"))
    }

    fn count(&self, live: &Live, status: &str) {
        *live
            .counters
            .borrow_mut()
            .proxied
            .entry(status.to_string())
            .or_insert(0) += 1;
    }

    /// The owner's reply, as this node's: its status, its JSON or its event stream.
    fn relay(
        &self,
        live: &Live,
        owner: &str,
        resp: Response<Either<Incoming, Full<Bytes>>>,
        events: bool,
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let body: Body = match body {
            Either::Right(full) => BodyExt::boxed_unsync(full),
            Either::Left(upstream) if events && parts.status == StatusCode::OK => {
                self.relay_stream(live, owner, upstream)
            }
            Either::Left(_) => BodyExt::boxed_unsync(Full::new(Bytes::new())),
        };
        let mut out = Response::new(body);
        *out.status_mut() = parts.status;
        for name in RETURNED {
            if let Some(v) = parts.headers.get(&name) {
                out.headers_mut().insert(name, v.clone());
            }
        }
        let node = parts
            .headers
            .get(NODE_HEADER)
            .cloned()
            .or_else(|| HeaderValue::from_str(owner).ok());
        if let Some(v) = node {
            out.headers_mut().insert(NODE_HEADER, v);
            // The owner's region (a proxied reply's, even when it is the owner's node in
            // another region): not this node's.
            match parts.headers.get(REGION_HEADER) {
                Some(r) => out.headers_mut().insert(REGION_HEADER, r.clone()),
                None => out.headers_mut().remove(REGION_HEADER),
            };
        }
        out
    }

    /// Relays an owner's event stream. When the owner is lost (its entry expired; or its
    /// stream broke and then its entry expired) the client gets `roomClosed {reason:
    /// "node_lost"}` and the stream ends; at this node's shutdown it just ends.
    fn relay_stream(&self, live: &Live, owner: &str, mut upstream: Incoming) -> Body {
        let (tx, rx) = flume::bounded::<Bytes>(STREAM_QUEUE);
        // Dropped with the client's body: the relay ends at once, and so does the owner's
        // stream (its per-user slot is free again).
        let (gone_tx, gone) = flume::bounded::<()>(0);
        let (lost_tx, lost) = flume::bounded::<()>(1);
        live.lost
            .borrow_mut()
            .entry(owner.to_string())
            .or_default()
            .push(lost_tx);
        let closed = live.closed.clone();
        let store = live.store.clone();
        let owner = owner.to_string();
        glommio::spawn_local(async move {
            enum Next {
                Frame(Option<Result<Frame<Bytes>, hyper::Error>>),
                Lost,
                Closed,
                Gone,
                Tick,
            }
            loop {
                let next = futures_lite::future::or(
                    async { Next::Frame(upstream.frame().await) },
                    futures_lite::future::or(
                        futures_lite::future::or(
                            async {
                                let _ = lost.recv_async().await;
                                Next::Lost
                            },
                            async {
                                let _ = gone.recv_async().await;
                                Next::Gone
                            },
                        ),
                        futures_lite::future::or(
                            async {
                                let _ = closed.recv_async().await;
                                Next::Closed
                            },
                            async {
                                glommio::timer::sleep(Duration::from_secs(5)).await;
                                Next::Tick
                            },
                        ),
                    ),
                )
                .await;
                match next {
                    Next::Frame(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if tx.send_async(data).await.is_err() {
                                return; // the client went away
                            }
                        }
                    }
                    Next::Frame(None) | Next::Closed | Next::Gone => return,
                    Next::Frame(Some(Err(e))) => {
                        tracing::debug!(node = %owner, "proxied event stream broke: {e}");
                        break;
                    }
                    Next::Lost => {
                        let _ = tx.try_send(room_closed());
                        return;
                    }
                    Next::Tick if tx.is_disconnected() => return,
                    Next::Tick => {}
                }
            }
            // The owner's stream broke: tell the client the room is gone if the owner's
            // entry expires within a TTL (it died); else just end (the client reconnects).
            let deadline = Instant::now() + TTL + Duration::from_secs(2);
            while Instant::now() < deadline {
                let gone = futures_lite::future::or(
                    async {
                        let _ = lost.recv_async().await;
                        true
                    },
                    async {
                        glommio::timer::sleep(Duration::from_millis(500)).await;
                        matches!(
                            store
                                .call(Op::Alive { id: owner.clone() }, REDIS_TIMEOUT)
                                .await,
                            Ok(Answer::Alive(false))
                        )
                    },
                )
                .await;
                if gone {
                    let _ = tx.try_send(room_closed());
                    return;
                }
                if closed.is_disconnected() || tx.is_disconnected() {
                    return;
                }
            }
        })
        .detach();
        let stream = futures_lite::StreamExt::map(rx.into_stream(), move |b| {
            let _held = &gone_tx;
            Ok::<_, std::convert::Infallible>(Frame::data(b))
        });
        BodyExt::boxed_unsync(StreamBody::new(stream))
    }
}

fn room_closed() -> Bytes {
    Bytes::from_static(
        b"event: roomClosed\ndata: {\"type\":\"roomClosed\",\"reason\":\"node_lost\"}\n\n",
    )
}

fn local(parts: hyper::http::request::Parts, body: Bytes) -> Request<RequestBody> {
    Request::from_parts(parts, Either::Right(Full::new(body)))
}

fn unreachable(owner: &str, why: &str) -> ApiError {
    ApiError::unavailable(format!(
        "the node that owns this room ({owner}) did not answer: {why}"
    ))
}

/// Reads a request body of at most [`MAX_BODY`] bytes (413 past it).
pub(super) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match within(Instant::now() + Duration::from_secs(30), limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(crate::http::body_too_large())
        }
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read request body: {e}"
        ))),
        Err(ProxyError::Failed(_) | ProxyError::Unreachable(_)) => {
            Err(ApiError::new(408, "request body not received in time"))
        }
    }
}
