//! The voice API's routes (`/api/voice/...`): parse, validate, send the command to the room's
//! shard, shape the reply. No media state is touched here.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::guard::Guard;
use super::input::{check_id, check_ids, percent_decode, read_json};
use super::limits::Limit;
use super::sse::Hub;
use super::Body;
use crate::sfu::api::{
    ApiError, ConnectTransportRequest, ConsumeRequest, Counts, CreateTransportRequest,
    ParticipantRequest, ProduceRequest, ProducerRequest,
};
use crate::sfu::ortc;
use crate::shard::{shard_for, Command, Reply, ShardHandle};

/// What the routes share (one per control server).
pub struct Ctx {
    pub shards: Vec<ShardHandle>,
    pub hub: RefCell<Hub>,
    pub cors_origin: Option<HeaderValue>,
    pub shutting_down: std::cell::Cell<bool>,
    pub started: std::time::Instant,
    pub guard: Guard,
    pub cluster: crate::cluster::Cluster,
    /// Serve the try-it page at `/` (`--demo-page`).
    pub demo_page: bool,
}

impl Ctx {
    fn shard(&self, channel_id: &str) -> &ShardHandle {
        &self.shards[shard_for(channel_id, self.shards.len())]
    }

    async fn call(&self, channel_id: &str, command: Command) -> Result<Reply, ApiError> {
        if self.shutting_down.get() {
            return Err(ApiError::unavailable("choir is shutting down"));
        }
        self.shard(channel_id).call(command).await
    }
}

fn unexpected(reply: Reply) -> ApiError {
    tracing::error!(?reply, "unexpected shard reply");
    ApiError::new(500, "internal error: unexpected shard reply")
}

/// Handles one request; never fails (errors are JSON replies).
pub async fn handle(
    req: Request<Incoming>,
    ctx: Rc<Ctx>,
    peer: std::net::IpAddr,
    nodes_only: bool,
) -> Result<Response<Body>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let label = route_label(&path);
    // A request another node of the cluster forwarded (its hop header signed with the cluster
    // secret): that node applied the client's limits; it carries the client's address.
    let hop = {
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        ctx.cluster.verified_hop(req.headers(), &method, target)
    };
    let client = hop.as_ref().map_or(peer, |h| h.client);
    let limited = super::limits::rate_limited(label, &method) && hop.is_none();
    let result = if nodes_only && hop.is_none() {
        Err(Limit::RequestRate.refuse("too many API connections from this address".to_string()))
    } else if limited {
        match ctx.guard.check_rate(peer) {
            Ok(()) => route(req, &ctx, client).await,
            Err(e) => Err(e),
        }
    } else {
        route(req, &ctx, client).await
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(limit) = e.limit {
                ctx.guard.counters.borrow_mut().refused(limit);
                tracing::info!(%method, %path, %peer, limit = limit.as_str(), "{}", e.message);
            }
            if e.status >= 500 {
                tracing::warn!(%method, %path, status = e.status, "{}", e.message);
            } else {
                tracing::debug!(%method, %path, status = e.status, "{}", e.message);
            }
            let mut r = json_response(
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &json!({"error": e.message}),
            );
            Guard::refusal_headers(&e, r.headers_mut());
            r
        }
    };
    ctx.cluster.decorate(&mut response);
    ctx.guard
        .counters
        .borrow_mut()
        .request(label, response.status().as_u16());
    if let Some(origin) = &ctx.cors_origin {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    Ok(response)
}

/// The route's name for metrics: one of a fixed set (never the client's text).
fn route_label(path: &str) -> &'static str {
    if path == "/metrics" {
        return "metrics";
    }
    if super::demo::is_page_path(path) {
        return "page";
    }
    let first = path
        .strip_prefix("/api/voice/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    const ROUTES: [&str; 16] = [
        "_cascade",
        "health",
        "cluster",
        "stats",
        "rtp-capabilities",
        "producers",
        "events",
        "create-transport",
        "connect-transport",
        "produce",
        "consume",
        "leave",
        "pause-producer",
        "resume-producer",
        "test",
        "metrics",
    ];
    ROUTES
        .into_iter()
        .find(|r| *r == first)
        .unwrap_or("unknown")
}

async fn route(
    req: Request<Incoming>,
    ctx: &Ctx,
    client: std::net::IpAddr,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let page = ctx
        .demo_page
        .then(|| super::demo::serve(req.method(), &path, ctx.guard.auth.is_some()));
    if let Some(reply) = page.flatten() {
        return reply;
    }
    if path == "/metrics" {
        if req.method() != Method::GET {
            return Err(ApiError::new(405, "/metrics takes GET"));
        }
        ctx.guard.check_metrics_token(req.headers())?;
        let format = crate::control::metrics::Format::negotiate(req.headers());
        return Ok(metrics(ctx, format).await);
    }
    let Some(rest) = path.strip_prefix("/api/voice/") else {
        return Err(ApiError::not_found(format!("no route {path}")));
    };
    let segments: Vec<String> = rest
        .split('/')
        .map(percent_decode)
        .collect::<Result<_, _>>()?;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method().clone();
    if method == Method::OPTIONS {
        return Ok(Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(empty())
            .expect("static response"));
    }
    // Node-to-node cascade requests (signed with the cluster secret; never proxied).
    if let ["_cascade", what] = segs.as_slice() {
        return crate::cluster::Cluster::cascade_request(ctx, what, req).await;
    }
    let allowed = match segs.as_slice() {
        ["health"]
        | ["stats"]
        | ["cluster"]
        | ["rtp-capabilities", _]
        | ["producers", _, _]
        | ["events", _, _] => Method::GET,
        ["create-transport"]
        | ["connect-transport"]
        | ["produce"]
        | ["consume"]
        | ["leave"]
        | ["pause-producer"]
        | ["resume-producer"] => Method::POST,
        ["test", "panic-shard", _] if ctx.guard.test_faults => Method::POST,
        _ => return Err(ApiError::not_found(format!("no route {path}"))),
    };
    if method != allowed {
        return Err(ApiError::new(
            405,
            format!("{path} takes {allowed}, not {method}"),
        ));
    }
    let claims = match segs.as_slice() {
        ["health"] | ["test", ..] => None,
        ["stats"] | ["cluster"] => {
            ctx.guard.check_metrics_token(req.headers())?;
            None
        }
        // EventSource cannot set headers: the event stream also takes `?token=`.
        ["events", ..] => ctx.guard.authenticate(req.headers(), req.uri().query())?,
        _ => ctx.guard.authenticate(req.headers(), None)?,
    };
    let req = match ctx
        .cluster
        .route(
            req,
            &segs,
            |channel| ctx.guard.authorize(&claims, channel, None),
            client,
        )
        .await?
    {
        crate::cluster::Routed::Local(req) => req,
        crate::cluster::Routed::Remote(response) => return Ok(response),
    };
    let guard = &ctx.guard;
    match segs.as_slice() {
        ["health"] => health(ctx).await,
        ["stats"] => stats(ctx).await,
        ["cluster"] => Ok(ok(&ctx.cluster.nodes_json(ctx).await?)),
        ["test", "panic-shard", n] => test_panic(ctx, n).await,
        ["rtp-capabilities", channel_id] => {
            check_id("channelId", channel_id)?;
            guard.authorize(&claims, channel_id, None)?;
            ctx.call(
                channel_id,
                Command::OpenRoom {
                    channel_id: channel_id.to_string(),
                },
            )
            .await?;
            Ok(ok(&json!({"rtpCapabilities": ortc::router_capabilities()})))
        }
        ["producers", channel_id, user_id] => {
            check_id("channelId", channel_id)?;
            check_id("userId", user_id)?;
            guard.authorize(&claims, channel_id, Some(user_id))?;
            let command = Command::Producers {
                channel_id: channel_id.to_string(),
                user_id: user_id.to_string(),
            };
            match ctx.call(channel_id, command).await? {
                Reply::Producers(list) => Ok(ok(&json!({ "producers": list }))),
                other => Err(unexpected(other)),
            }
        }
        ["events", channel_id, user_id] => {
            check_id("channelId", channel_id)?;
            check_id("userId", user_id)?;
            guard.authorize(&claims, channel_id, Some(user_id))?;
            if ctx.shutting_down.get() {
                return Err(ApiError::unavailable("choir is shutting down"));
            }
            let max = guard.limits.max_event_streams_per_user;
            if max > 0 && ctx.hub.borrow().streams_of(user_id) >= max as usize {
                return Err(Limit::EventStreams.refuse(format!(
                    "user {user_id:?} already has {max} open event streams"
                )));
            }
            // `?levels=1`: this stream also gets `audioLevels`.
            let levels = match req
                .uri()
                .query()
                .and_then(|q| super::guard::query_param(q, "levels"))
                .as_deref()
            {
                None | Some("0") | Some("false") => false,
                Some("1") | Some("true") => true,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "levels must be 1 or 0, not {other:?}"
                    )))
                }
            };
            Ok(events(ctx, channel_id, user_id, levels))
        }
        ["create-transport"] => {
            let body: CreateTransportRequest = read_json(req).await?;
            check_ids(&body.channel_id, &body.user_id)?;
            guard.authorize(&claims, &body.channel_id, Some(&body.user_id))?;
            match ctx
                .call(&body.channel_id.clone(), Command::CreateTransport(body))
                .await?
            {
                Reply::Transport(t) => Ok(ok(&t)),
                other => Err(unexpected(other)),
            }
        }
        ["connect-transport"] => {
            let body: ConnectTransportRequest = read_json(req).await?;
            check_ids(&body.channel_id, &body.user_id)?;
            guard.authorize(&claims, &body.channel_id, Some(&body.user_id))?;
            ctx.call(&body.channel_id.clone(), Command::ConnectTransport(body))
                .await?;
            Ok(ok(&json!({"success": true})))
        }
        ["produce"] => {
            let body: ProduceRequest = read_json(req).await?;
            check_ids(&body.channel_id, &body.user_id)?;
            guard.authorize(&claims, &body.channel_id, Some(&body.user_id))?;
            match ctx
                .call(&body.channel_id.clone(), Command::Produce(body))
                .await?
            {
                Reply::Producer(id) => Ok(ok(&json!({ "producerId": id }))),
                other => Err(unexpected(other)),
            }
        }
        ["consume"] => {
            let body: ConsumeRequest = read_json(req).await?;
            check_ids(&body.channel_id, &body.user_id)?;
            guard.authorize(&claims, &body.channel_id, Some(&body.user_id))?;
            match ctx
                .call(&body.channel_id.clone(), Command::Consume(body))
                .await?
            {
                Reply::Consumer(c) => Ok(ok(&c)),
                other => Err(unexpected(other)),
            }
        }
        ["pause-producer"] | ["resume-producer"] => {
            let pause = segs[0] == "pause-producer";
            let body: ProducerRequest = read_json(req).await?;
            check_ids(&body.channel_id, &body.user_id)?;
            guard.authorize(&claims, &body.channel_id, Some(&body.user_id))?;
            let command = if pause {
                Command::PauseProducer(body.clone())
            } else {
                Command::ResumeProducer(body.clone())
            };
            ctx.call(&body.channel_id, command).await?;
            Ok(ok(&json!({"success": true})))
        }
        ["leave"] => {
            let body: ParticipantRequest = read_json(req).await?;
            check_ids(&body.channel_id, &body.user_id)?;
            guard.authorize(&claims, &body.channel_id, Some(&body.user_id))?;
            ctx.call(&body.channel_id.clone(), Command::Leave(body))
                .await?;
            Ok(ok(&json!({"success": true})))
        }
        _ => Err(ApiError::not_found(format!("no route {path}"))),
    }
}

async fn health(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    // A shard is failed when its thread has ended, or when it dies while answering (the check
    // can race a dying shard: its thread is gone a moment after its last reply).
    let mut failed = Vec::new();
    let mut counts = Counts::default();
    for shard in &ctx.shards {
        if !shard.is_alive() {
            failed.push(shard.index);
            continue;
        }
        match shard.call(Command::Counts).await {
            Ok(Reply::Counts(c)) => counts += c,
            Ok(other) => return Err(unexpected(other)),
            Err(_) if ctx.shutting_down.get() => break,
            Err(_) => failed.push(shard.index),
        }
    }
    if !failed.is_empty() {
        return Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "unhealthy", "failedShards": failed}),
        ));
    }
    if ctx.shutting_down.get() {
        return Ok(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "shutting down"}),
        ));
    }
    let mut body = json!({
        "status": "ok",
        "shards": ctx.shards.len(),
        "rooms": counts.rooms,
        "participants": counts.participants,
        "transports": counts.transports,
        "producers": counts.producers,
        "consumers": counts.consumers,
        "boundPorts": counts.bound_ports,
        "subscribers": ctx.hub.borrow().subscribers(),
        "uptimeSeconds": ctx.started.elapsed().as_secs(),
    });
    let status = ctx.cluster.health(&mut body);
    Ok(json_response(status, &body))
}

async fn stats(ctx: &Ctx) -> Result<Response<Body>, ApiError> {
    let mut shards = Vec::new();
    for shard in &ctx.shards {
        match shard.call(Command::Stats).await? {
            Reply::Stats(s) => shards.push(s),
            other => return Err(unexpected(other)),
        }
    }
    let mut total = crate::sfu::Counters::default();
    for s in &shards {
        total.merge(&s.counters);
    }
    let hub = ctx.hub.borrow();
    Ok(ok(&json!({
        "total": total,
        "shards": shards,
        "events": {"subscribers": hub.subscribers(), "delivered": hub.delivered, "overflows": hub.overflows},
    })))
}

/// `GET /metrics`: a `Stats` snapshot of every shard plus the control plane's counters.
async fn metrics(ctx: &Ctx, format: crate::control::metrics::Format) -> Response<Body> {
    let mut snapshot = crate::control::metrics::Snapshot::default();
    for shard in &ctx.shards {
        match shard.call(Command::Stats).await {
            Ok(Reply::Stats(s)) => snapshot.shards.push(*s),
            _ => snapshot.failed_shards.push(shard.index),
        }
    }
    {
        let hub = ctx.hub.borrow();
        snapshot.event_streams = hub.subscribers() as u64;
        snapshot.events_delivered = hub.delivered;
        snapshot.event_overflows = hub.overflows;
    }
    snapshot.control = ctx.guard.counters.borrow().clone();
    snapshot.rate_limited_clients = ctx.guard.rate_limited_clients() as u64;
    snapshot.http_connections = ctx.guard.open_connections();
    snapshot.uptime_seconds = ctx.started.elapsed().as_secs();
    snapshot.cluster = ctx.cluster.metrics();
    Response::builder()
        .header(header::CONTENT_TYPE, format.content_type())
        .body(BodyExt::boxed_unsync(Full::new(Bytes::from(
            crate::control::metrics::render_as(snapshot, format),
        ))))
        .expect("static response")
}

/// Test only (`--test-faults`): makes shard `n` panic.
async fn test_panic(ctx: &Ctx, n: &str) -> Result<Response<Body>, ApiError> {
    let shard = n
        .parse::<usize>()
        .ok()
        .and_then(|i| ctx.shards.get(i))
        .ok_or_else(|| ApiError::not_found(format!("no shard {n:?}")))?;
    tracing::warn!(shard = shard.index, "test fault: making the shard panic");
    shard.call(Command::TestPanic).await?;
    Ok(ok(&json!({"success": true})))
}

fn events(ctx: &Ctx, channel_id: &str, user_id: &str, levels: bool) -> Response<Body> {
    let rx = ctx
        .hub
        .borrow_mut()
        .subscribe_with(channel_id, user_id, levels);
    let stream = futures_lite::StreamExt::map(rx.into_stream(), |b| {
        Ok::<_, std::convert::Infallible>(Frame::data(b))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
        .expect("static response")
}

fn empty() -> Body {
    BodyExt::boxed_unsync(Full::new(Bytes::new()))
}

fn ok<T: serde::Serialize>(value: &T) -> Response<Body> {
    json_response(StatusCode::OK, value)
}

fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value)
        .unwrap_or_else(|_| b"{\"error\":\"serialization failed\"}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed_unsync(Full::new(Bytes::from(body))))
        .expect("static response")
}
