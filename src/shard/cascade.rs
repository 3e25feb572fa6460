//! The shell's half of cascading (issue 22, [`crate::sfu::cascade`]): the shard's link port and
//! the commands that drive its core's links and remote producers.
//!
//! **The link port.** Each shard sends and receives all its cascade links on one UDP port, its
//! *link port*, whatever the rooms: the peer's datagrams carry the link id this shard chose, so
//! one port serves every link. In single-port mode it is the shard's shared port (its UDP
//! sockets carry links beside the transports; with `--enable-udp false`, a UDP-only socket is
//! bound on that port at the first link). In per-transport mode one more port of the shard's
//! slice is bound, UDP only, at the first [`LinkCommand::LinkPort`] or [`LinkCommand::AddLink`]
//! (not at start: a slice sized for its transports keeps all its ports for them until a room
//! cascades), and held until the shard stops; it is not counted in `boundPorts`. Either way the
//! port is in the shard's `stats` (`linkPort`, 0 before it is bound), and the control plane
//! advertises `announced_ip:link_port` to the peer.
//!
//! **Receiving.** Every UDP socket of the shard (transports' sockets, shared ones, the link
//! socket) hands a datagram whose first octet is [`crate::wire::relay::KIND`] to
//! [`Sfu::on_link_datagram`](crate::sfu::Sfu::on_link_datagram) with the port it arrived on,
//! before any transport demultiplexing; the core counts a link datagram on the wrong port as a
//! `relay.wrong_port` drop. The per-transport link socket takes nothing else
//! (`relay.not_relay`). **Sending**: [`Egress::send_to`](crate::sfu::Egress::send_to) from the
//! link port goes into the turn's send batch, like a transport's datagram.

use std::rc::Rc;
use std::time::Instant;

use super::ports::PortMode;
use super::run::{listen_of, Shard};
use super::Reply;
use crate::sfu::api::ApiError;
use crate::sfu::cascade::{LinkParams, RemoteProducer};

/// What the control plane asks of a shard about cascade links (see
/// [`crate::control::cascade`] for the calls that send them).
#[derive(Debug)]
pub enum LinkCommand {
    /// The shard's link port, bound first if need be: [`Reply::LinkPort`].
    LinkPort,
    /// [`Sfu::add_link`](crate::sfu::Sfu::add_link); a `local_port` of 0 is the shard's link
    /// port (bound first if need be): [`Reply::Link`].
    AddLink(LinkParams),
    RemoveLink {
        channel_id: String,
        peer: String,
        reason: Option<String>,
    },
    AddRemoteProducer {
        channel_id: String,
        peer: String,
        producer: RemoteProducer,
    },
    RemoveRemoteProducer {
        channel_id: String,
        peer: String,
        producer_id: String,
        reason: Option<String>,
    },
    SetRemotePaused {
        channel_id: String,
        peer: String,
        producer_id: String,
        paused: bool,
    },
    RemoteParticipantLeft {
        channel_id: String,
        peer: String,
        user_id: String,
        reason: String,
    },
    /// [`Sfu::sync_remote_producers`](crate::sfu::Sfu::sync_remote_producers):
    /// [`Reply::Synced`].
    SyncRemoteProducers {
        channel_id: String,
        peer: String,
        producers: Vec<RemoteProducer>,
    },
    /// A local producer, as a peer adds it: [`Reply::RemoteProducer`].
    RelayedProducer {
        channel_id: String,
        producer_id: String,
    },
    /// Every local producer of a room, as a peer adds them: [`Reply::RemoteProducers`].
    RelayedProducers { channel_id: String },
    /// The shard's links: [`Reply::Links`].
    Links,
    /// One link: [`Reply::Link`] (404 when there is none).
    Link { channel_id: String, peer: String },
}

impl Shard {
    pub(super) fn cascade_command(
        self: &Rc<Self>,
        command: LinkCommand,
        now: Instant,
    ) -> Result<Reply, ApiError> {
        match command {
            LinkCommand::LinkPort => self.link_port().map(Reply::LinkPort),
            LinkCommand::AddLink(mut params) => {
                if params.local_port == 0 {
                    params.local_port = self.link_port()?;
                }
                let (channel_id, peer) = (params.channel_id.clone(), params.peer.clone());
                self.with_core(|sfu, _| {
                    sfu.add_link(params, now)?;
                    sfu.link(&channel_id, &peer)
                        .ok_or_else(|| ApiError::new(500, "the link just added is missing"))
                })
                .map(|info| Reply::Link(Box::new(info)))
            }
            LinkCommand::RemoveLink {
                channel_id,
                peer,
                reason,
            } => self
                .with_core(|sfu, _| sfu.remove_link(&channel_id, &peer, reason.as_deref()))
                .map(|()| Reply::Done),
            LinkCommand::AddRemoteProducer {
                channel_id,
                peer,
                producer,
            } => self
                .with_core(|sfu, _| sfu.add_remote_producer(&channel_id, &peer, producer))
                .map(|()| Reply::Done),
            LinkCommand::RemoveRemoteProducer {
                channel_id,
                peer,
                producer_id,
                reason,
            } => self
                .with_core(|sfu, _| {
                    sfu.remove_remote_producer(&channel_id, &peer, &producer_id, reason.as_deref())
                })
                .map(|()| Reply::Done),
            LinkCommand::SetRemotePaused {
                channel_id,
                peer,
                producer_id,
                paused,
            } => self
                .with_core(|sfu, _| sfu.set_remote_paused(&channel_id, &peer, &producer_id, paused))
                .map(|()| Reply::Done),
            LinkCommand::RemoteParticipantLeft {
                channel_id,
                peer,
                user_id,
                reason,
            } => self
                .with_core(|sfu, _| {
                    sfu.remote_participant_left(&channel_id, &peer, &user_id, &reason)
                })
                .map(|()| Reply::Done),
            LinkCommand::SyncRemoteProducers {
                channel_id,
                peer,
                producers,
            } => self
                .with_core(|sfu, _| sfu.sync_remote_producers(&channel_id, &peer, producers))
                .map(Reply::Synced),
            LinkCommand::RelayedProducer {
                channel_id,
                producer_id,
            } => self
                .sfu
                .borrow()
                .relayed_producer(&channel_id, &producer_id)
                .map(|p| Reply::RemoteProducer(Box::new(p))),
            LinkCommand::RelayedProducers { channel_id } => self
                .sfu
                .borrow()
                .relayed_producers(&channel_id)
                .map(Reply::RemoteProducers),
            LinkCommand::Links => Ok(Reply::Links(self.sfu.borrow().links())),
            LinkCommand::Link { channel_id, peer } => self
                .sfu
                .borrow()
                .link(&channel_id, &peer)
                .map(|info| Reply::Link(Box::new(info)))
                .ok_or_else(|| ApiError::not_found("no such link")),
        }
    }

    /// The shard's link port, bound now if it is not yet (see the module's notes).
    fn link_port(self: &Rc<Self>) -> Result<u16, ApiError> {
        let port = self.sockets.borrow().link_port();
        if port != 0 {
            return Ok(port);
        }
        let bound = match (self.setup.link_port, self.setup.mode) {
            (Some(port), _) => {
                let mut listen = listen_of(&self.setup);
                listen.tcp = false;
                listen.udp = true;
                listen.bind(port).map_err(|e| {
                    ApiError::unavailable(format!("cannot bind the link port {port}: {e}"))
                })?
            }
            (None, PortMode::PerTransport) => self.ports.borrow_mut().bind_link()?,
            (None, PortMode::Single) => {
                let mut listen = listen_of(&self.setup);
                listen.tcp = false;
                listen.udp = true;
                let port = self.setup.ports.0;
                listen.bind(port).map_err(|e| {
                    ApiError::unavailable(format!("cannot bind the link port {port}: {e}"))
                })?
            }
        };
        let port = bound.port;
        let udp = self.attach(bound, None, true);
        if udp.is_empty() {
            return Err(ApiError::unavailable(format!(
                "cannot receive on the link port {port}"
            )));
        }
        self.sockets.borrow_mut().set_link(port, &udp);
        tracing::info!(shard = self.index, port, "cascade link port bound");
        Ok(port)
    }
}
