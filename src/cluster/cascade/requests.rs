//! The cascade's requests between nodes: signing and checking them, and the peer's side of a
//! set-up and of an announcement (see [`super`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    add_producer, cascade_call, done, install, keys, link_addr, random_id, relayed_producers,
    remove_link, unexpected, unix_ms, Announce, EventMessage, Link, LinkReply, LinkRequest, Nudge,
    Outgoing, DEADLINE, PREFIX, REQUEST_LABEL, SIGNATURE_HEADER,
};
use crate::cluster::secret::{Secret, HOP_MAX_AGE};
use crate::cluster::{Cluster, Host, Live};
use crate::http::Body;
use crate::sfu::api::ApiError;
use crate::shard::{LinkCommand, Reply};

/// How long a silent link's peer gets to answer `/health` before it is declared lost.
const ANSWER_WAIT: Duration = Duration::from_millis(500);

impl Cluster {
    /// Signs a cascade request: the value of [`SIGNATURE_HEADER`].
    fn cascade_signature(&self, secret: &Secret, path: &str, body: &[u8]) -> String {
        let id = &self.identity.id;
        let ms = unix_ms().to_string();
        let mac = secret.sign(
            REQUEST_LABEL,
            &[id.as_bytes(), path.as_bytes(), ms.as_bytes(), body],
        );
        format!("{id};{ms};{mac}")
    }

    /// What a cascade request's signature header says, checked before its body is read: a
    /// well-formed, fresh signature of another registered node (`(node, ms, mac)`), or why the
    /// request is refused. An unsigned flood costs a header parse.
    fn cascade_claim<'h>(
        &self,
        live: &Live,
        headers: &'h hyper::HeaderMap,
    ) -> Result<(&'h str, &'h str, &'h str), &'static str> {
        live.config.secret.as_ref().ok_or("no cluster secret")?;
        let value = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("unsigned")?;
        let mut parts = value.splitn(3, ';');
        let (node, ms, mac) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(t), Some(m)) => (n, t, m),
            _ => return Err("malformed signature"),
        };
        let at: u64 = ms.parse().map_err(|_| "malformed signature")?;
        let now = unix_ms();
        if now.abs_diff(at) > HOP_MAX_AGE.as_millis() as u64 {
            return Err("stale signature");
        }
        if !live.nodes.borrow().contains_key(node) || node == self.identity.id {
            return Err("not a registered node");
        }
        Ok((node, ms, mac))
    }

    /// The node that signed a cascade request (its claim checked by [`Self::cascade_claim`]),
    /// or why it is refused.
    fn cascade_sender(
        &self,
        live: &Live,
        (node, ms, mac): (&str, &str, &str),
        path: &str,
        body: &[u8],
    ) -> Result<String, &'static str> {
        let secret = live.config.secret.as_ref().ok_or("no cluster secret")?;
        if !secret.verify(
            REQUEST_LABEL,
            &[node.as_bytes(), path.as_bytes(), ms.as_bytes(), body],
            mac,
        ) {
            return Err("forged signature");
        }
        let mut state = live.cascade.borrow_mut();
        let fresh = Instant::now();
        // Pruned at most once a second: the check stays O(1) per request.
        if state
            .pruned
            .is_none_or(|t| fresh.duration_since(t) >= Duration::from_secs(1))
        {
            state.pruned = Some(fresh);
            state
                .seen
                .retain(|_, t| fresh.duration_since(*t) < HOP_MAX_AGE * 2);
        }
        if state.seen.insert(mac.to_string(), fresh).is_some() {
            return Err("replayed");
        }
        Ok(node.to_string())
    }

    /// Sends a signed cascade request to node `url` and parses its JSON answer.
    pub(super) async fn cascade_post<T: Serialize, R: for<'de> Deserialize<'de>>(
        &self,
        live: &Live,
        url: &str,
        what: &str,
        body: &T,
    ) -> Result<R, String> {
        let secret = live.config.secret.as_ref().ok_or("no cluster secret")?;
        let path = format!("{PREFIX}{what}");
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(&path)
            .header(header::HOST, url.trim_start_matches("http://"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                SIGNATURE_HEADER,
                self.cascade_signature(secret, &path, &bytes),
            )
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| e.to_string())?;
        let resp = live
            .pool
            .request(url, req, Instant::now() + DEADLINE)
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if status != StatusCode::OK {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
        }
        serde_json::from_slice(&body).map_err(|e| format!("bad answer: {e}"))
    }

    /// `POST /api/voice/_cascade/<what>` from another node.
    pub async fn cascade_request<H: Host>(
        ctx: &H,
        what: &str,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let cluster = ctx.cluster();
        let Some(live) = &cluster.live else {
            return Err(ApiError::not_found("not a cluster node"));
        };
        if req.method() != Method::POST {
            return Err(ApiError::new(405, "cascade requests take POST"));
        }
        let refuse = |why: &str| {
            live.cascade.borrow_mut().counters.refused += 1;
            tracing::info!(why, "cascade request refused");
            ApiError::new(403, format!("cascade request refused: {why}"))
        };
        crate::http::check_declared_length(req.headers())?;
        let (parts, body) = req.into_parts();
        let claim = cluster
            .cascade_claim(live, &parts.headers)
            .map_err(refuse)?;
        let body = crate::cluster::route::read_body(body).await?;
        let node = cluster
            .cascade_sender(live, claim, parts.uri.path(), &body)
            .map_err(refuse)?;
        let answer = match what {
            "link" => {
                let r: LinkRequest = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("bad link request: {e}")))?;
                if r.node != node {
                    return Err(ApiError::new(403, "link request for another node"));
                }
                cluster.accept_link(ctx, live, r).await?
            }
            "event" => {
                let m: EventMessage = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("bad event: {e}")))?;
                if m.node != node {
                    return Err(ApiError::new(403, "event of another node"));
                }
                cluster.apply_event(ctx, live, m).await?;
                json!({"success": true})
            }
            "nudge" => {
                let n: Nudge = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("bad nudge: {e}")))?;
                crate::http::check_id("channelId", &n.channel)?;
                live.cascade.borrow().wake(&n.channel, false);
                json!({"success": true})
            }
            _ => return Err(ApiError::not_found(format!("no route {PREFIX}{what}"))),
        };
        Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(BodyExt::boxed_unsync(Full::new(Bytes::from(
                answer.to_string(),
            ))))
            .expect("static response"))
    }

    /// The peer's side of a set-up.
    async fn accept_link<H: Host>(
        &self,
        ctx: &H,
        live: &Live,
        r: LinkRequest,
    ) -> Result<Value, ApiError> {
        crate::http::check_id("channelId", &r.channel)?;
        let nodes = self.fetch_room_nodes(&r.channel).await;
        let me = &self.identity;
        let Some(region) = nodes
            .iter()
            .find(|n| n.id == r.node)
            .map(|n| n.region.clone())
        else {
            return Err(ApiError::new(409, "both nodes must carry the room"));
        };
        if !nodes.iter().any(|n| n.id == me.id) {
            return Err(ApiError::new(409, "both nodes must carry the room"));
        }
        let key = (r.channel.clone(), r.node.clone());
        let old = live.cascade.borrow_mut().links.remove(&key);
        if let Some(old) = old {
            // The peer set the link up again: it restarted (its participants are gone), or it
            // judged the link dead. Either way the old link's producers leave until the new
            // one is alive.
            let reason = if old.incarnation == r.incarnation {
                "link_lost"
            } else {
                "node_lost"
            };
            remove_link(ctx, &r.channel, &r.node, Some(reason)).await;
        }
        self.pending(live, &key, &r.incarnation);
        let result = async {
            let secret = live
                .config
                .secret
                .as_ref()
                .ok_or_else(|| ApiError::unavailable("no cluster secret"))?;
            ctx.open_room(&r.channel).await?;
            let addr = link_addr(ctx, &r.channel).await?;
            let producers = relayed_producers(ctx, &r.channel).await?;
            let receive_id = random_id();
            let (send_key, receive_key) = keys(
                secret,
                (&me.id, &me.incarnation, receive_id),
                (&r.node, &r.incarnation, r.receive_id),
                &r.channel,
            );
            install(
                ctx,
                &r.channel,
                (&r.node, &region),
                (receive_id, receive_key),
                (r.receive_id, send_key),
                r.link_addr,
            )
            .await?;
            Ok::<_, ApiError>(LinkReply {
                incarnation: me.incarnation.clone(),
                receive_id,
                link_addr: addr,
                producers,
            })
        }
        .await;
        match result {
            Ok(reply) => {
                // The initiator's producers are added once the link carries datagrams.
                let mut state = live.cascade.borrow_mut();
                if let Some(link) = state.links.get_mut(&key) {
                    link.incoming = r.producers;
                    link.receive_id = reply.receive_id;
                }
                state.send_wake(super::Wake::Accepted((key, reply.receive_id)));
                Ok(serde_json::to_value(reply).unwrap_or_default())
            }
            Err(e) => {
                live.cascade.borrow_mut().links.remove(&key);
                remove_link(ctx, &r.channel, &r.node, None).await;
                Err(e)
            }
        }
    }

    /// Marks a link as being set up (its announcements are held).
    pub(super) fn pending(&self, live: &Live, key: &(String, String), incarnation: &str) {
        live.cascade.borrow_mut().links.insert(
            key.clone(),
            Link {
                incarnation: incarnation.to_string(),
                ready: false,
                held: Vec::new(),
                incoming: Vec::new(),
                receive_id: 0,
                since: Instant::now(),
                synced: Instant::now(),
            },
        );
    }

    /// A link set up: its held announcements go out.
    pub(super) fn ready(&self, live: &Live, key: &(String, String)) {
        let mut state = live.cascade.borrow_mut();
        state.counters.links_set_up += 1;
        let held = match state.links.get_mut(key) {
            Some(link) => {
                link.ready = true;
                link.since = Instant::now();
                std::mem::take(&mut link.held)
            }
            None => return,
        };
        if let Some(q) = state.queue(&key.1) {
            for ev in held {
                if q.try_send((key.0.clone(), Outgoing::Event(ev))).is_err() {
                    state.counters.announce_failed += 1;
                }
            }
        }
    }

    /// An announcement of a peer.
    async fn apply_event<H: Host>(
        &self,
        ctx: &H,
        live: &Live,
        m: EventMessage,
    ) -> Result<(), ApiError> {
        let key = (m.channel.clone(), m.node.clone());
        // A peer's announcement may overtake the end of its link's set-up here.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let ready = match live.cascade.borrow().links.get(&key) {
                None => return Err(ApiError::new(409, "no link")),
                Some(l) if !l.ready => false,
                Some(l) if l.incarnation != m.incarnation => {
                    return Err(ApiError::new(409, "another incarnation's link"))
                }
                Some(_) => true,
            };
            if ready {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ApiError::new(409, "link not set up in time"));
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        {
            let mut state = live.cascade.borrow_mut();
            state.counters.applied += 1;
            // What applying it makes the shard emit is about a remote user: never announced
            // back (a listener's participantLeft would bounce between the nodes).
            if let Announce::ParticipantLeft { user_id, .. } = &m.event {
                let ids = state.remote.entry(m.channel.clone()).or_default();
                ids.insert(user_id.clone());
            }
        }
        let (channel, peer) = (m.channel, m.node);
        let cmd = match m.event {
            Announce::NewProducer { producer } => {
                add_producer(ctx, live, &channel, &peer, producer).await;
                return Ok(());
            }
            Announce::Paused {
                producer_id,
                paused,
            } => LinkCommand::SetRemotePaused {
                channel_id: channel.clone(),
                peer,
                producer_id,
                paused,
            },
            Announce::ProducerClosed { producer_id } => LinkCommand::RemoveRemoteProducer {
                channel_id: channel.clone(),
                peer,
                producer_id,
                reason: None,
            },
            Announce::ParticipantLeft { user_id, reason } => LinkCommand::RemoteParticipantLeft {
                channel_id: channel.clone(),
                peer,
                user_id,
                reason,
            },
            Announce::Sync { producers } => {
                {
                    let mut state = live.cascade.borrow_mut();
                    let ids = state.remote.entry(channel.clone()).or_default();
                    for p in &producers {
                        ids.insert(p.producer_id.clone());
                        ids.insert(p.user_id.clone());
                    }
                }
                let cmd = LinkCommand::SyncRemoteProducers {
                    channel_id: channel.clone(),
                    peer: peer.clone(),
                    producers,
                };
                return match cascade_call(ctx, &channel, cmd).await? {
                    Reply::Synced(0) => Ok(()),
                    Reply::Synced(n) => {
                        tracing::info!(channel = %channel, peer = %peer, changed = n, "cascade resync repaired remote producers");
                        live.cascade.borrow_mut().counters.resynced += n as u64;
                        Ok(())
                    }
                    other => Err(unexpected(other)),
                };
            }
        };
        done(ctx, &channel, cmd).await
    }
}

impl Cluster {
    /// Whether node `peer`'s API answers at all (its `/health`, within [`ANSWER_WAIT`]).
    pub(in crate::cluster) async fn answers(&self, live: &Live, peer: &str) -> bool {
        let Some(url) = self.node_url(live, peer) else {
            return false;
        };
        let Ok(req) = Request::builder()
            .uri("/api/voice/health")
            .header(header::HOST, url.trim_start_matches("http://"))
            .body(Full::new(Bytes::new()))
        else {
            return false;
        };
        live.pool
            .request(&url, req, Instant::now() + ANSWER_WAIT)
            .await
            .is_ok()
    }

    /// The cascade's links and counters, for `GET /cluster`.
    pub(in crate::cluster) fn cascade_json(&self, live: &Live) -> Value {
        let state = live.cascade.borrow();
        let mut links: Vec<Value> = state
            .links
            .iter()
            .map(|((c, p), l)| json!({"channel": c, "peer": p, "ready": l.ready}))
            .collect();
        links.sort_by_key(|v| v.to_string());
        json!({"links": links, "counters": state.counters})
    }
}
