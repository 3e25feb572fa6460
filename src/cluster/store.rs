//! The cluster's state in Redis, reached through the `redis` crate's synchronous client on a
//! thread of its own: the control executor sends a [`Job`] on a channel and awaits the answer,
//! so it never blocks on Redis (and glommio needs no tokio). One connection, so the jobs of this
//! node reach Redis in the order they were sent.
//!
//! Keys (one Redis instance; Redis Cluster is not supported):
//! - `choir:node:<id>`: the node's entry (JSON), written every heartbeat with a TTL; the node
//!   is alive while it exists. `choir:nodes`: the set of ids, to list them.
//! - `choir:room:<channelId>`: the owner's id. `choir:rooms:<id>`: the channels placed on a
//!   node, scored by placement time (ms), for its room count, its sweep, and clean-up after it
//!   died.
//!
//! Every change is a Lua script, so each is atomic: ten concurrent first joins of a channel
//! through three nodes run one after another in Redis and all see the first one's owner.

use std::time::{Duration, Instant};

use redis::Script;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// Read/write timeout of a command on an open connection.
const IO_TIMEOUT: Duration = Duration::from_millis(1000);
/// Reconnection backoff: from this, doubling, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);

/// Common Lua: listing the live nodes, forgetting a dead one (and its rooms).
const LUA_LIB: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function forget(id)
  redis.call('SREM', 'choir:nodes', id)
  for _, c in ipairs(redis.call('ZRANGE', 'choir:rooms:' .. id, 0, -1)) do
    if redis.call('GET', 'choir:room:' .. c) == id then
      redis.call('DEL', 'choir:room:' .. c)
    end
  end
  redis.call('DEL', 'choir:rooms:' .. id)
end
local function list()
  local out = {}
  for _, id in ipairs(redis.call('SMEMBERS', 'choir:nodes')) do
    local e = redis.call('GET', 'choir:node:' .. id)
    if e then
      table.insert(out, id)
      table.insert(out, e)
      table.insert(out, redis.call('ZCARD', 'choir:rooms:' .. id))
    else
      forget(id)
    end
  end
  return out
end
"#;

/// ARGV: id, entry JSON, TTL ms, sweep age ms, first (1: this process's first write: rooms
/// left by an earlier process with the same id are forgotten). Returns {existed (0/1), {id, entry, rooms, ...}, {channels placed here older than the age}}.
const LUA_HEARTBEAT: &str = r#"
local id = ARGV[1]
local key = 'choir:node:' .. id
local existed = redis.call('EXISTS', key)
if ARGV[5] == '1' then forget(id) end
redis.call('SET', key, ARGV[2], 'PX', ARGV[3])
redis.call('SADD', 'choir:nodes', id)
local old = redis.call('ZRANGEBYSCORE', 'choir:rooms:' .. id, '-inf', now_ms() - tonumber(ARGV[4]))
return {existed, list(), old}
"#;

/// ARGV: none. Returns {id, entry, rooms, ...}.
const LUA_LIST: &str = "return list()";

/// ARGV: channel, region, seed, place (0/1). Returns {status, owner, entry}: status 0 = found,
/// 1 = placed now, 2 = not placed (place = 0), 3 = no node can take it.
///
/// Placement: serving nodes under their room limit, those of `region` first, then the least
/// loaded (rooms placed on it, counted here atomically, plus participants and consumers of its
/// last heartbeat), ties broken by `seed`.
const LUA_RESOLVE: &str = r#"
local c = ARGV[1]
local key = 'choir:room:' .. c
local owner = redis.call('GET', key)
if owner then
  local e = redis.call('GET', 'choir:node:' .. owner)
  if e then return {0, owner, e} end
  redis.call('DEL', key)
  redis.call('ZREM', 'choir:rooms:' .. owner, c)
end
if ARGV[4] == '0' then return {2, '', ''} end
local same, any = {}, {}
local min_same, min_any
for _, id in ipairs(redis.call('SMEMBERS', 'choir:nodes')) do
  local raw = redis.call('GET', 'choir:node:' .. id)
  if raw then
    local ok, e = pcall(cjson.decode, raw)
    if ok and e.state == 'serving' then
      local rooms = redis.call('ZCARD', 'choir:rooms:' .. id)
      local max = tonumber(e.maxRooms) or 0
      if max == 0 or rooms < max then
        local load = rooms + (tonumber(e.participants) or 0) + (tonumber(e.consumers) or 0)
        if min_any == nil or load < min_any then min_any = load; any = {} end
        if load == min_any then table.insert(any, {id, raw}) end
        if e.region == ARGV[2] then
          if min_same == nil or load < min_same then min_same = load; same = {} end
          if load == min_same then table.insert(same, {id, raw}) end
        end
      end
    end
  end
end
local pool = same
if #pool == 0 then pool = any end
if #pool == 0 then return {3, '', ''} end
local pick = pool[(tonumber(ARGV[3]) % #pool) + 1]
redis.call('SET', key, pick[1])
redis.call('ZADD', 'choir:rooms:' .. pick[1], now_ms(), c)
return {1, pick[1], pick[2]}
"#;

/// ARGV: id, channels... Claims each channel for `id` unless a live node owns it.
/// Returns {channel, owner, ...} for each channel another live node owns.
const LUA_CLAIM: &str = r#"
local id = ARGV[1]
local t = now_ms()
local conflicts = {}
for i = 2, #ARGV do
  local c = ARGV[i]
  local key = 'choir:room:' .. c
  local owner = redis.call('GET', key)
  if owner and owner ~= id and redis.call('EXISTS', 'choir:node:' .. owner) == 1 then
    table.insert(conflicts, c)
    table.insert(conflicts, owner)
  else
    redis.call('SET', key, id)
    redis.call('ZADD', 'choir:rooms:' .. id, t, c)
  end
end
return conflicts
"#;

/// ARGV: id, channels... Removes the channels' entries that `id` owns.
const LUA_RELEASE: &str = r#"
local id = ARGV[1]
for i = 2, #ARGV do
  local c = ARGV[i]
  if redis.call('GET', 'choir:room:' .. c) == id then
    redis.call('DEL', 'choir:room:' .. c)
  end
  redis.call('ZREM', 'choir:rooms:' .. id, c)
end
return #ARGV - 1
"#;

/// ARGV: id. Removes the node's entry and its rooms (a clean stop).
const LUA_UNREGISTER: &str = r#"
redis.call('DEL', 'choir:node:' .. ARGV[1])
forget(ARGV[1])
return 1
"#;

/// One live node as Redis has it.
#[derive(Debug, Clone)]
pub struct NodeRecord {
    pub id: String,
    /// The entry JSON the node wrote.
    pub entry: String,
    /// Channels placed on it (the directory's count).
    pub rooms: u64,
}

/// What a resolve found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// The channel's owner and its entry JSON; `placed`: placed by this call.
    Owner {
        id: String,
        entry: String,
        placed: bool,
    },
    /// No live owner and no placement asked.
    Absent,
    /// No serving node can take a room.
    NoNode,
}

#[derive(Debug)]
pub struct Heartbeat {
    /// The node's entry existed before this write (false at the first write, and after Redis
    /// lost it: restarted, or the node missed its TTL).
    pub existed: bool,
    pub nodes: Vec<NodeRecord>,
    /// Channels placed on this node longer ago than the sweep age.
    pub old_rooms: Vec<String>,
}

#[derive(Debug)]
pub enum Op {
    Heartbeat {
        id: String,
        entry: String,
        ttl: Duration,
        sweep_age: Duration,
        first: bool,
    },
    List,
    Resolve {
        channel: String,
        region: String,
        seed: u32,
        place: bool,
    },
    Claim {
        id: String,
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
}

#[derive(Debug)]
pub enum Answer {
    Heartbeat(Heartbeat),
    Nodes(Vec<NodeRecord>),
    Resolved(Resolved),
    /// (channel, owner) pairs another live node owns.
    Conflicts(Vec<(String, String)>),
    Alive(bool),
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
    claim: Script,
    release: Script,
    unregister: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let with_lib = |body: &str| Script::new(&format!("{LUA_LIB}\n{body}"));
        Scripts {
            heartbeat: with_lib(LUA_HEARTBEAT),
            list: with_lib(LUA_LIST),
            resolve: Script::new(&format!("local function now_ms()\n  local t = redis.call('TIME')\n  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\nend\n{LUA_RESOLVE}")),
            claim: with_lib(LUA_CLAIM),
            release: Script::new(LUA_RELEASE),
            unregister: with_lib(LUA_UNREGISTER),
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
            ttl,
            sweep_age,
            first,
        } => {
            let (existed, nodes, old): (i64, Vec<redis::Value>, Vec<String>) = s
                .heartbeat
                .arg(&id)
                .arg(&entry)
                .arg(ttl.as_millis() as u64)
                .arg(sweep_age.as_millis() as u64)
                .arg(if first { "1" } else { "0" })
                .invoke(con)?;
            Answer::Heartbeat(Heartbeat {
                existed: existed == 1,
                nodes: records(nodes)?,
                old_rooms: old,
            })
        }
        Op::List => Answer::Nodes(records(s.list.invoke(con)?)?),
        Op::Resolve {
            channel,
            region,
            seed,
            place,
        } => {
            let (status, owner, entry): (i64, String, String) = s
                .resolve
                .arg(&channel)
                .arg(&region)
                .arg(seed)
                .arg(if place { "1" } else { "0" })
                .invoke(con)?;
            Answer::Resolved(match status {
                0 | 1 => Resolved::Owner {
                    id: owner,
                    entry,
                    placed: status == 1,
                },
                2 => Resolved::Absent,
                _ => Resolved::NoNode,
            })
        }
        Op::Claim { id, channels } => {
            let mut inv = s.claim.arg(&id);
            for c in &channels {
                inv.arg(c);
            }
            let flat: Vec<String> = inv.invoke(con)?;
            Answer::Conflicts(
                flat.chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            )
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
            let n: i64 = redis::cmd("EXISTS")
                .arg(format!("choir:node:{id}"))
                .query(con)?;
            Answer::Alive(n == 1)
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
