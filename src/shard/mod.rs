//! The glommio shell around a shard's sans-IO core ([`crate::sfu::Sfu`]).
//!
//! A shard is one glommio executor (one thread, pinned to one core where possible). It owns
//! every room whose channelId hashes to it ([`shard_for`]) and one slice of the RTC port range.
//! The control server talks to it only through typed [`Command`]s on a channel and awaits the
//! reply; nothing of a shard's state is shared with other threads or locked.

mod batch;
mod cascade;
mod poll;
mod ports;
mod reply;
mod run;
mod sockets;
mod tcp;

use crate::sfu::api::{
    ApiError, ConnectTransportRequest, ConsumeRequest, ConsumerOptions, Counts,
    CreateTransportRequest, ParticipantRequest, ProduceRequest, ProducerInfo, ProducerRequest,
    TransportOptions,
};
use crate::sfu::Counters;

pub use cascade::LinkCommand;
pub use ports::PortMode;
pub use run::{in_loop_turn, spawn, ShardSetup};

/// What the control server asks of a shard.
#[derive(Debug)]
pub enum Command {
    /// Make sure the room exists (`rtp-capabilities`).
    OpenRoom {
        channel_id: String,
    },
    CreateTransport(CreateTransportRequest),
    ConnectTransport(ConnectTransportRequest),
    Produce(ProduceRequest),
    Consume(ConsumeRequest),
    Producers {
        channel_id: String,
        user_id: String,
    },
    PauseProducer(ProducerRequest),
    ResumeProducer(ProducerRequest),
    Leave(ParticipantRequest),
    /// Room/participant counts, for `health`.
    Counts,
    /// Counts and counters, for `stats`.
    Stats,
    /// Each room's channelId and participant count (cluster directory upkeep).
    Rooms,
    /// Cascade links and remote producers (issue 22): see [`LinkCommand`].
    Cascade(LinkCommand),
    /// Close everything and stop the executor.
    Shutdown,
    /// Test only (`--test-faults`): panic on the shard's thread.
    TestPanic,
}

impl Command {
    /// The room (and user) a command acts for: once it succeeds, their join deadline restarts
    /// ([`crate::sfu::Sfu::touch`]). `leave` and the process-wide commands have none.
    pub fn scope(&self) -> Option<(String, Option<String>)> {
        let both = |c: &str, u: &str| Some((c.to_string(), Some(u.to_string())));
        match self {
            Command::OpenRoom { channel_id } => Some((channel_id.clone(), None)),
            Command::CreateTransport(r) => both(&r.channel_id, &r.user_id),
            Command::ConnectTransport(r) => both(&r.channel_id, &r.user_id),
            Command::Produce(r) => both(&r.channel_id, &r.user_id),
            Command::Consume(r) => both(&r.channel_id, &r.user_id),
            Command::Producers {
                channel_id,
                user_id,
            } => both(channel_id, user_id),
            Command::PauseProducer(r) | Command::ResumeProducer(r) => {
                both(&r.channel_id, &r.user_id)
            }
            Command::Leave(_)
            | Command::Cascade(_)
            | Command::Counts
            | Command::Stats
            | Command::Rooms
            | Command::Shutdown
            | Command::TestPanic => None,
        }
    }
}

/// A shard's answer.
#[derive(Debug)]
pub enum Reply {
    Done,
    Transport(TransportOptions),
    Producer(String),
    Consumer(ConsumerOptions),
    Producers(Vec<ProducerInfo>),
    Counts(Counts),
    Stats(Box<ShardStats>),
    Rooms(Vec<(String, u64)>),
    LinkPort(u16),
    Link(Box<crate::sfu::cascade::LinkInfo>),
    Links(Vec<crate::sfu::cascade::LinkInfo>),
    RemoteProducer(Box<crate::sfu::cascade::RemoteProducer>),
    RemoteProducers(Vec<crate::sfu::cascade::RemoteProducer>),
    /// Remote producers a resync changed.
    Synced(usize),
}

/// A shard's counts and counters.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardStats {
    pub shard: usize,
    pub ports: (u16, u16),
    pub counts: Counts,
    pub counters: Counters,
    /// How late the shard's timer tick ran last (event-loop lag), in microseconds.
    pub loop_lag_us: u64,
    /// Receive-loop turns that found datagrams, parks (turns that found none), yields (a busy
    /// loop letting the rest of the shard run), and parks that ended on their bound although
    /// datagrams were waiting (a ring heard late or not at all; rare, see SOAK.md).
    pub loop_turns: u64,
    pub loop_parks: u64,
    pub loop_yields: u64,
    pub loop_unheard: u64,
    pub transport_states: crate::sfu::TransportStates,
    /// The shard's cascade link port (see [`LinkCommand::LinkPort`]); 0 before it is bound.
    pub link_port: u16,
    /// The cascade's figures per peer node.
    pub peers: Vec<crate::sfu::cascade::PeerStats>,
}

pub(crate) struct Envelope {
    pub command: Command,
    pub reply: flume::Sender<Result<Reply, ApiError>>,
}

/// The control server's handle on a shard.
#[derive(Clone)]
pub struct ShardHandle {
    pub index: usize,
    pub ports: (u16, u16),
    tx: flume::Sender<Envelope>,
    /// Disconnects when the shard's thread has ended (its sender lives on the thread that joins
    /// it). A command queued while the shard died is never received nor dropped (the control
    /// server's senders keep the queue alive), so a caller waits on this as well as the reply.
    dead: flume::Receiver<()>,
}

impl ShardHandle {
    /// False once the shard's command loop is gone (it stopped, or its thread panicked).
    pub fn is_alive(&self) -> bool {
        !self.tx.is_disconnected() && !self.dead.is_disconnected()
    }

    /// Sends a command and awaits the reply (runtime-agnostic: works from any executor).
    pub async fn call(&self, command: Command) -> Result<Reply, ApiError> {
        let (reply, rx) = flume::bounded(1);
        let envelope = Envelope { command, reply };
        if self.tx.send_async(envelope).await.is_err() {
            return Err(ApiError::unavailable(format!(
                "shard {} is not running",
                self.index
            )));
        }
        let reply = async { rx.recv_async().await.ok() };
        let died = async {
            let _ = self.dead.recv_async().await;
            None
        };
        futures_lite::future::or(reply, died)
            .await
            .unwrap_or_else(|| {
                Err(ApiError::unavailable(format!(
                    "shard {} stopped before replying",
                    self.index
                )))
            })
    }
}

/// A glommio executor builder for choir's threads (shards and the control server).
///
/// glommio 0.9.0 (its latest release) parks an executor that still has runnable tasks when its
/// preempt timer fires between the reactor poll (which re-arms the timer) and the first
/// `need_preempt()` check of `run_task_queues`: nothing ran, so it takes "nothing to do" and
/// sleeps; with no timer or I/O pending (the woken tasks are the ones that would arm them), it
/// never wakes, and later wakes of the already-scheduled tasks write no eventfd. Seen here as a
/// shard that stopped answering commands (health, SIGTERM) on a loaded machine, where a thread
/// descheduled for the default 100 ms inside that window is enough. A minimal example hangs
/// every time with `preempt_timer(1 µs)`: two tasks passing messages over a local channel.
/// Fixed upstream after 0.9 (glommio/glommio#53, "do not park the executor while a task queue
/// is still runnable"), not released. choir has one task queue per executor, so preemption
/// between queues buys nothing: the timer is set far beyond any stall, which closes the window.
pub fn executor(placement: glommio::Placement, name: &str) -> glommio::LocalExecutorBuilder {
    glommio::LocalExecutorBuilder::new(placement)
        .name(name)
        .preempt_timer(PREEMPT_TIMER)
}

/// See [`executor`]: long enough that no thread is ever descheduled for it.
const PREEMPT_TIMER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The shard owning `channel_id`: FNV-1a (64-bit) of its UTF-8 bytes, modulo the shard count.
/// Stable across runs and builds, so a room always lands on the same shard for a given count.
pub fn shard_for(channel_id: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::{shard_for, Command, Envelope, ShardHandle};

    /// A command sent while the shard's thread dies is neither received nor dropped (the queue
    /// outlives the shard): the caller must still get 503, not wait forever.
    #[test]
    fn a_command_queued_to_a_dead_shard_answers_unavailable() {
        let (tx, queue) = flume::unbounded::<Envelope>();
        let (dead_tx, dead) = flume::bounded::<()>(1);
        let shard = ShardHandle {
            index: 3,
            ports: (0, 0),
            tx,
            dead,
        };
        assert!(shard.is_alive());
        drop(dead_tx); // the shard's thread ended; `queue` (its receiver) was leaked
        assert!(!shard.is_alive());
        let reply = futures_lite::future::block_on(shard.call(Command::Counts));
        let err = reply.expect_err("no reply from a dead shard");
        assert_eq!(err.status, 503);
        assert!(err.message.contains("shard 3"), "{}", err.message);
        assert_eq!(queue.len(), 1, "the command sat in the queue, unanswered");
    }

    #[test]
    fn hash_is_stable_and_spreads() {
        // FNV-1a test vector: "a" → 0xaf63dc4c8601ec8c.
        assert_eq!(
            shard_for("a", usize::MAX),
            (0xaf63_dc4c_8601_ec8c_u64 % usize::MAX as u64) as usize
        );
        let on_zero = (0..100)
            .filter(|i| shard_for(&format!("room-{i}"), 2) == 0)
            .count();
        assert!((30..=70).contains(&on_zero), "{on_zero}");
        assert_eq!(shard_for("x", 1), 0);
    }
}
