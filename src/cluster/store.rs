//! The cluster's state in Redis, reached through the `redis` crate's synchronous client on a
//! thread of its own: the control executor sends a [`Job`] on a channel and awaits the answer,
//! so it never blocks on Redis (and glommio needs no tokio). One connection, so the jobs of this
//! node reach Redis in the order they were sent.
//!
//! Every change is a Lua script ([`super::lua`], which lists the keys), so each is atomic: ten
//! concurrent first joins of a channel through three nodes run one after another in Redis and
//! all see the first one's owner.

use std::time::{Duration, Instant};

use redis::Script;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Read/write timeout of a command on an open connection.
const IO_TIMEOUT: Duration = Duration::from_millis(1000);
/// Reconnection backoff: from this, doubling, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);

/// A node not lost, as Redis has it.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub id: String,
    /// The entry JSON the node wrote; empty for a node expected back after Redis forgot
    /// everything (a restart or a flush) that has not written it again yet.
    pub entry: String,
    /// Channels placed on it (the directory's count).
    pub rooms: u64,
}

/// What a resolve found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The channel's owner and its entry JSON (empty if not written again yet after a flush);
    /// `placed`: placed by this call.
    Owner {
        id: String,
        entry: String,
        placed: bool,
    },
    /// No live owner and no placement asked.
    Absent,
    /// No serving node can take a room.
    NoNode,
    /// Not in the directory while it is rebuilt after a gap in Redis's service: its owner may
    /// not have re-claimed it yet.
    Rebuilding,
}

#[derive(Debug)]
pub struct Heartbeat {
    /// The Redis instance's identity (`choir:epoch`): new after a restart or a flush.
    pub epoch: String,
    pub nodes: Vec<NodeRecord>,
    /// Channels placed on this node longer ago than the sweep age.
    pub old_rooms: Vec<String>,
    /// (channel, owner): rooms this node has that another node owns with at least as many
    /// live participants: this node stops serving them.
    pub yielded: Vec<(String, String)>,
    /// The node sets of the rooms this node kept, from the same script.
    pub sets: Vec<(String, RoomSet)>,
}

/// A room's nodes as the directory has them: (region, node id); region "" = no region.
pub type RoomSet = Vec<(String, String)>;

#[derive(Debug)]
pub enum Op {
    /// The node's entry, and a claim on every room it has.
    Heartbeat {
        id: String,
        entry: String,
        sweep_age: Duration,
        first: bool,
        /// The epoch the node saw last ("" before its first heartbeat).
        epoch: String,
        /// The nodes it knew (expected back if Redis forgot them).
        known: Vec<String>,
        /// Its rooms (channel, live participants).
        rooms: Vec<(String, u64)>,
    },
    List,
    Resolve {
        channel: String,
        region: String,
        seed: u32,
        place: bool,
        /// Set (a request another node forwarded here): whether the directory names this
        /// node in any region; no placement.
        member: Option<String>,
    },
    /// The node sets of these rooms (nodes not lost).
    RoomNodes {
        channels: Vec<String>,
    },
    Release {
        id: String,
        channels: Vec<String>,
    },
    Alive {
        id: String,
    },
    Unregister {
        id: String,
    },
    /// At start: the cluster's layout on this Redis, and whether another live process holds
    /// this node id.
    Start {
        id: String,
        incarnation: String,
        url: String,
    },
}

#[derive(Debug)]
pub enum Answer {
    Heartbeat(Heartbeat),
    Nodes(Vec<NodeRecord>),
    Resolved(Resolved),
    RoomNodes(Vec<(String, RoomSet)>),
    Alive(bool),
    /// The layout of the cluster on this Redis, and the URL of another live process with this
    /// node id ("" if none).
    Started {
        schema: String,
        holder: String,
    },
    Done,
}

struct Job {
    op: Op,
    /// A job still queued past this is answered with an error, not run: its caller gave up.
    deadline: Instant,
    reply: flume::Sender<Result<Answer, String>>,
}

/// The control executor's handle on the Redis thread.
#[derive(Clone)]
pub struct Store {
    tx: flume::Sender<Job>,
    /// A message each time the thread reconnected after losing Redis.
    pub reconnected: flume::Receiver<()>,
}

struct Scripts {
    heartbeat: Script,
    list: Script,
    resolve: Script,
    room_nodes: Script,
    release: Script,
    alive: Script,
    unregister: Script,
    start: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let src = super::lua::Sources::new(super::TTL);
        Scripts {
            heartbeat: Script::new(&src.heartbeat),
            list: Script::new(&src.list),
            resolve: Script::new(&src.resolve),
            room_nodes: Script::new(&src.room_nodes),
            release: Script::new(&src.release),
            alive: Script::new(&src.alive),
            unregister: Script::new(&src.unregister),
            start: Script::new(&src.start),
        }
    }
}

/// The Redis connection, reopened with backoff after a failure.
struct Link {
    client: redis::Client,
    con: Option<redis::Connection>,
    backoff: Duration,
    next_try: Instant,
    lost: bool,
}

impl Link {
    fn open(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
        let mut con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        redis::cmd("PING").query::<String>(&mut con)?;
        Ok(con)
    }

    /// The open connection, or an attempt to reopen it (fails fast while backing off).
    fn get(&mut self, reconnected: &flume::Sender<()>) -> Result<&mut redis::Connection, String> {
        if self.con.is_none() {
            let now = Instant::now();
            if now < self.next_try {
                return Err("Redis unreachable (reconnecting)".into());
            }
            match Link::open(&self.client) {
                Ok(con) => {
                    self.con = Some(con);
                    self.backoff = BACKOFF_MIN;
                    if std::mem::take(&mut self.lost) {
                        tracing::info!("Redis reachable again");
                        let _ = reconnected.try_send(());
                    }
                }
                Err(e) => {
                    self.next_try = now + self.backoff;
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    return Err(format!("Redis unreachable: {e}"));
                }
            }
        }
        Ok(self.con.as_mut().expect("just opened"))
    }

    fn failed(&mut self, e: &redis::RedisError) {
        let connection_lost = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error();
        if connection_lost && self.con.take().is_some() {
            tracing::warn!("Redis connection lost: {e}");
            self.lost = true;
            self.next_try = Instant::now() + self.backoff;
        }
    }
}

impl Store {
    /// Connects to Redis (refusing to start when it is unreachable or refuses the password),
    /// then starts the thread that owns the connection.
    pub fn connect(url: &str) -> Result<Store, String> {
        let shown = super::config::redact(url);
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis URL {shown}: {e}"))?;
        let con = Link::open(&client).map_err(|e| {
            if e.kind() == redis::ErrorKind::AuthenticationFailed
                || e.to_string().contains("WRONGPASS")
                || e.to_string().contains("NOAUTH")
            {
                format!("Redis at {shown} refused the credentials: {e}")
            } else {
                format!("cannot reach Redis at {shown}: {e}")
            }
        })?;
        let (tx, rx) = flume::unbounded::<Job>();
        let (re_tx, re_rx) = flume::bounded(1);
        let mut link = Link {
            client,
            con: Some(con),
            backoff: BACKOFF_MIN,
            next_try: Instant::now(),
            lost: false,
        };
        std::thread::Builder::new()
            .name("choir-redis".into())
            .spawn(move || {
                let scripts = Scripts::new();
                while let Ok(job) = rx.recv() {
                    if Instant::now() > job.deadline {
                        let _ = job.reply.send(Err("Redis did not answer in time".into()));
                        continue;
                    }
                    let result = match link.get(&re_tx) {
                        Err(e) => Err(e),
                        Ok(con) => match run(&scripts, con, job.op) {
                            Ok(a) => Ok(a),
                            Err(e) => {
                                link.failed(&e);
                                Err(format!("Redis error: {e}"))
                            }
                        },
                    };
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| format!("cannot start the Redis thread: {e}"))?;
        Ok(Store {
            tx,
            reconnected: re_rx,
        })
    }

    /// Runs `op` on the Redis thread; an error after `timeout` at most.
    pub async fn call(&self, op: Op, timeout: Duration) -> Result<Answer, String> {
        let (reply, rx) = flume::bounded(1);
        let job = Job {
            op,
            deadline: Instant::now() + timeout,
            reply,
        };
        if self.tx.send(job).is_err() {
            return Err("the Redis thread stopped".into());
        }
        let answer = async { rx.recv_async().await.ok() };
        let late = async {
            glommio::timer::sleep(timeout).await;
            None
        };
        match futures_lite::future::or(answer, late).await {
            Some(r) => r,
            None => Err("Redis did not answer in time".into()),
        }
    }
}

fn run(s: &Scripts, con: &mut redis::Connection, op: Op) -> redis::RedisResult<Answer> {
    Ok(match op {
        Op::Heartbeat {
            id,
            entry,
            sweep_age,
            first,
            epoch,
            known,
            rooms,
        } => {
            let mut inv = s.heartbeat.prepare_invoke();
            inv.arg(&id)
                .arg(&entry)
                .arg(sweep_age.as_millis() as u64)
                .arg(if first { "1" } else { "0" })
                .arg(&epoch)
                .arg(known.len());
            for k in &known {
                inv.arg(k);
            }
            for (c, p) in &rooms {
                inv.arg(c).arg(*p);
            }
            let (epoch, nodes, old, yielded, sets): (
                String,
                Vec<redis::Value>,
                Vec<String>,
                Vec<String>,
                Vec<redis::Value>,
            ) = inv.invoke(con)?;
            Answer::Heartbeat(Heartbeat {
                epoch,
                nodes: records(nodes)?,
                old_rooms: old,
                yielded: yielded
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
                sets: room_sets(sets)?,
            })
        }
        Op::List => Answer::Nodes(records(s.list.invoke(con)?)?),
        Op::Resolve {
            channel,
            region,
            seed,
            place,
            member,
        } => {
            let (status, owner, entry): (i64, String, String) = s
                .resolve
                .arg(&channel)
                .arg(&region)
                .arg(seed)
                .arg(if place { "1" } else { "0" })
                .arg(member.as_deref().unwrap_or(""))
                .invoke(con)?;
            Answer::Resolved(match status {
                0 | 1 => Resolved::Owner {
                    id: owner,
                    entry,
                    placed: status == 1,
                },
                2 => Resolved::Absent,
                4 => Resolved::Rebuilding,
                _ => Resolved::NoNode,
            })
        }
        Op::RoomNodes { channels } => {
            if channels.is_empty() {
                return Ok(Answer::RoomNodes(Vec::new()));
            }
            let mut inv = s.room_nodes.prepare_invoke();
            for c in &channels {
                inv.arg(c);
            }
            Answer::RoomNodes(room_sets(inv.invoke(con)?)?)
        }
        Op::Release { id, channels } => {
            let mut inv = s.release.arg(&id);
            for c in &channels {
                inv.arg(c);
            }
            let _: i64 = inv.invoke(con)?;
            Answer::Done
        }
        Op::Alive { id } => {
            let n: i64 = s.alive.arg(&id).invoke(con)?;
            Answer::Alive(n == 1)
        }
        Op::Start {
            id,
            incarnation,
            url,
        } => {
            let (schema, holder): (String, String) =
                s.start.arg(&id).arg(&incarnation).arg(&url).invoke(con)?;
            Answer::Started { schema, holder }
        }
        Op::Unregister { id } => {
            let _: i64 = s.unregister.arg(&id).invoke(con)?;
            Answer::Done
        }
    })
}

/// {id, entry, rooms, id, entry, rooms, ...} → records.
fn records(flat: Vec<redis::Value>) -> redis::RedisResult<Vec<NodeRecord>> {
    let mut out = Vec::new();
    let mut it = flat.into_iter();
    while let (Some(id), Some(entry), Some(rooms)) = (it.next(), it.next(), it.next()) {
        out.push(NodeRecord {
            id: redis::from_redis_value(id)?,
            entry: redis::from_redis_value(entry)?,
            rooms: redis::from_redis_value(rooms)?,
        });
    }
    Ok(out)
}

/// {channel, n, region, id, ... (n pairs), ...} → (channel, set) pairs.
fn room_sets(flat: Vec<redis::Value>) -> redis::RedisResult<Vec<(String, RoomSet)>> {
    let mut out = Vec::new();
    let mut it = flat.into_iter();
    while let (Some(c), Some(n)) = (it.next(), it.next()) {
        let n: usize = redis::from_redis_value(n)?;
        let mut set = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let (Some(r), Some(id)) = (it.next(), it.next()) else {
                break;
            };
            set.push((redis::from_redis_value(r)?, redis::from_redis_value(id)?));
        }
        out.push((redis::from_redis_value(c)?, set));
    }
    Ok(out)
}
