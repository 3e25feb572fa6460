//! The Lua scripts of the registry and room directory ([`super::store`]). Each runs atomically
//! in Redis.
//!
//! Keys (one Redis instance; Redis Cluster is not supported):
//! - `choir:node:<id>`: the node's entry (JSON, with its incarnation), rewritten every heartbeat.
//! - `choir:live`: node ids scored by their last heartbeat (Redis's clock, ms).
//! - `choir:room:<channelId>`: the owner's id. `choir:rooms:<id>`: the channels placed on a
//!   node, scored by placement time (ms), for its room count, its sweep, and clean-up after it
//!   died. `choir:busy:<id>`: the node's rooms with live participants (channel → count), as of
//!   its last heartbeat: a conflicting claim is settled toward the node that has them.
//! - `choir:epoch`: this Redis's identity, written when missing: a restart without
//!   persistence or a `FLUSHALL` shows as a new epoch.
//! - `choir:clock`: `tick` (the last script's time) and `since` (when Redis last started serving
//!   the cluster without a gap). A gap is no script for [`GAP`] (Redis stalled, restarted or
//!   flushed, or every node cut off from it): a node is lost only after a [`TTL`] without a
//!   heartbeat while Redis served without a gap, so after a gap every node gets a TTL to come
//!   back.
//! - `choir:schema`: the layout of these keys ([`SCHEMA`]): a node of another layout refuses
//!   to start on this Redis.
//! - `choir:expect`: the nodes alive when the gap began (and, after a flush, those the returning
//!   nodes knew): until each has sent a heartbeat (or a TTL passed), a room the directory does
//!   not know is not placed (its owner may not have re-claimed it yet).
//!
//! [`TTL`]: super::TTL

use std::time::Duration;

/// No script for this long is a gap in Redis's service (see the module doc). Above the
/// heartbeat period, so that one node's regular heartbeats never look like a gap.
pub const GAP: Duration = Duration::from_millis(3000);
/// The layout of choir's keys (1: before incarnations; its nodes are listed in the set
/// `choir:nodes`). Nodes of another layout cannot share a Redis.
pub const SCHEMA: &str = "2";

/// Common Lua: the clock, liveness, listing, forgetting a dead node.
/// `{ttl}` and `{gap}` are replaced by the TTL and [`GAP`] in ms.
const LIB: &str = r#"
local TTL_MS = {ttl}
local GAP_MS = {gap}
local SCHEMA = '{schema}'
local NOW, SINCE
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Redis's continuity (see src/cluster/lua.rs).
local function clock()
  NOW = now_ms()
  local epoch = redis.call('GET', 'choir:epoch')
  local c = redis.call('HMGET', 'choir:clock', 'tick', 'since')
  local tick, since = tonumber(c[1]), tonumber(c[2])
  if not epoch or not tick or not since or NOW - tick > GAP_MS then
    redis.call('DEL', 'choir:expect')
    if tick and since then
      local from = tick - TTL_MS
      if since > from then from = '-inf' end
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', 'choir:live', from, '+inf')) do
        redis.call('SADD', 'choir:expect', id)
      end
    end
    since = NOW
    redis.call('HSET', 'choir:clock', 'since', since)
  end
  if not epoch then
    local t = redis.call('TIME')
    redis.call('SET', 'choir:epoch', t[1] .. '.' .. t[2])
    redis.call('SETNX', 'choir:schema', SCHEMA)
  end
  redis.call('HSET', 'choir:clock', 'tick', NOW)
  SINCE = since
end
local function last_beat(id)
  return tonumber(redis.call('ZSCORE', 'choir:live', id))
end
-- Alive: a heartbeat within a TTL, a TTL not counting Redis's gaps.
local function alive(id)
  local last = last_beat(id)
  return last ~= nil and NOW - math.max(last, SINCE) < TTL_MS
end
-- Expected back after a gap, not yet back, and the TTL to come back not over.
local function pending(id)
  if NOW - SINCE >= TTL_MS or redis.call('SISMEMBER', 'choir:expect', id) == 0 then
    return false
  end
  local last = last_beat(id)
  return last == nil or last < SINCE
end
local function known(id)
  return alive(id) or pending(id)
end
-- Whether a room the directory does not know may be placed: every node expected back after
-- the last gap is back (it re-claimed its rooms in that heartbeat), or a TTL passed.
local function settled()
  if NOW - SINCE >= TTL_MS then return true end
  for _, id in ipairs(redis.call('SMEMBERS', 'choir:expect')) do
    local last = last_beat(id)
    if last == nil or last < SINCE then return false end
  end
  return true
end
local function forget(id)
  redis.call('ZREM', 'choir:live', id)
  redis.call('SREM', 'choir:expect', id)
  redis.call('DEL', 'choir:node:' .. id)
  for _, c in ipairs(redis.call('ZRANGE', 'choir:rooms:' .. id, 0, -1)) do
    if redis.call('GET', 'choir:room:' .. c) == id then
      redis.call('DEL', 'choir:room:' .. c)
    end
  end
  redis.call('DEL', 'choir:rooms:' .. id, 'choir:busy:' .. id)
end
-- {id, entry, rooms, ...}: the nodes not lost; the entry is '' for a node expected back whose
-- entry Redis lost (a flush).
local function list()
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', 'choir:live', 0, -1)) do
    if known(id) then
      table.insert(out, id)
      table.insert(out, redis.call('GET', 'choir:node:' .. id) or '')
      table.insert(out, redis.call('ZCARD', 'choir:rooms:' .. id))
    else
      forget(id)
    end
  end
  for _, id in ipairs(redis.call('SMEMBERS', 'choir:expect')) do
    if last_beat(id) == nil and pending(id) then
      table.insert(out, id)
      table.insert(out, '')
      table.insert(out, 0)
    end
  end
  return out
end
clock()
"#;

/// ARGV: id, entry JSON, sweep age ms, first (1: this process's first write: rooms left by an
/// earlier process with the same id are forgotten), the epoch the node saw last ('' if none),
/// n, n ids of the nodes it knew, then channel, participants pairs: the rooms it has.
///
/// Each room is claimed for the node unless another node not lost owns it with at least as
/// many live participants (as of its last heartbeat); those are yielded. Returns {epoch, {id,
/// entry, rooms, ...}, {channels placed here older than the sweep age}, {channel, owner, ...}
/// yielded}.
const HEARTBEAT: &str = r#"
local id = ARGV[1]
if ARGV[4] == '1' then forget(id) end
redis.call('SET', 'choir:node:' .. id, ARGV[2], 'PX', TTL_MS * 10)
redis.call('ZADD', 'choir:live', NOW, id)
local epoch = redis.call('GET', 'choir:epoch')
local n = tonumber(ARGV[6])
if ARGV[5] ~= '' and ARGV[5] ~= epoch and NOW - SINCE < TTL_MS then
  -- A Redis that forgot everything: the nodes this one knew get a TTL to come back.
  for i = 7, 6 + n do
    if ARGV[i] ~= id then redis.call('SADD', 'choir:expect', ARGV[i]) end
  end
end
local busy = 'choir:busy:' .. id
redis.call('DEL', busy)
local yielded = {}
local i = 7 + n
while i < #ARGV do
  local c, p = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local key = 'choir:room:' .. c
  local owner = redis.call('GET', key)
  local mine = not owner or owner == id or not known(owner)
  if not mine then
    local theirs = tonumber(redis.call('HGET', 'choir:busy:' .. owner, c)) or 0
    if p > theirs then
      mine = true
      redis.call('ZREM', 'choir:rooms:' .. owner, c)
      redis.call('HDEL', 'choir:busy:' .. owner, c)
    end
  end
  if mine then
    redis.call('SET', key, id)
    redis.call('ZADD', 'choir:rooms:' .. id, 'NX', NOW, c)
    if p > 0 then redis.call('HSET', busy, c, p) end
  else
    table.insert(yielded, c)
    table.insert(yielded, owner)
  end
end
local old = redis.call('ZRANGEBYSCORE', 'choir:rooms:' .. id, '-inf', NOW - tonumber(ARGV[3]))
return {epoch, list(), old, yielded}
"#;

/// ARGV: none. Returns {id, entry, rooms, ...}.
const LIST: &str = "return list()";

/// ARGV: channel, region, seed, place (0/1). Returns {status, owner, entry}: status 0 = found,
/// 1 = placed now, 2 = not placed (place = 0), 3 = no node can take it, 4 = unknown while the
/// directory is rebuilt after a gap (see `settled`).
///
/// Placement: serving nodes under their room limit with a heartbeat within a TTL, those of
/// `region` first, then the least loaded (rooms placed on it, counted here atomically, plus
/// participants and consumers of its last heartbeat), ties broken by `seed`.
const RESOLVE: &str = r#"
local c = ARGV[1]
local key = 'choir:room:' .. c
local owner = redis.call('GET', key)
if owner then
  if known(owner) then
    return {0, owner, redis.call('GET', 'choir:node:' .. owner) or ''}
  end
  redis.call('DEL', key)
  redis.call('ZREM', 'choir:rooms:' .. owner, c)
end
if not settled() then return {4, '', ''} end
if ARGV[4] == '0' then return {2, '', ''} end
local same, any = {}, {}
local min_same, min_any
for _, id in ipairs(redis.call('ZRANGEBYSCORE', 'choir:live', NOW - TTL_MS, '+inf')) do
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
redis.call('ZADD', 'choir:rooms:' .. pick[1], NOW, c)
return {1, pick[1], pick[2]}
"#;

/// ARGV: id, channels... Removes the channels' entries that `id` owns.
const RELEASE: &str = r#"
local id = ARGV[1]
for i = 2, #ARGV do
  local c = ARGV[i]
  if redis.call('GET', 'choir:room:' .. c) == id then
    redis.call('DEL', 'choir:room:' .. c)
  end
  redis.call('ZREM', 'choir:rooms:' .. id, c)
  redis.call('HDEL', 'choir:busy:' .. id, c)
end
return #ARGV - 1
"#;

/// ARGV: id. 1 while the node is not lost (alive, or expected back after a gap).
const ALIVE: &str = "if known(ARGV[1]) then return 1 end return 0";

/// At start, before the first heartbeat. ARGV: id, incarnation, url. Returns {schema, url}:
/// the layout of the cluster already on this Redis ('1' for nodes of the layout before
/// incarnations, listed in `choir:nodes`), and the URL of another live process holding this
/// node id ('' if none). A process with this id and this URL is an earlier incarnation of this
/// one (this one holds its port now: it is gone).
const START: &str = r#"
for _, id in ipairs(redis.call('SMEMBERS', 'choir:nodes')) do
  if redis.call('EXISTS', 'choir:node:' .. id) == 1 then return {'1', ''} end
end
local schema = redis.call('GET', 'choir:schema') or SCHEMA
if schema ~= SCHEMA then return {schema, ''} end
redis.call('SET', 'choir:schema', SCHEMA)
local raw = redis.call('GET', 'choir:node:' .. ARGV[1])
if raw and alive(ARGV[1]) then
  local ok, e = pcall(cjson.decode, raw)
  if ok and e.incarnation ~= ARGV[2] and e.url ~= ARGV[3] then return {schema, e.url} end
end
return {schema, ''}
"#;

/// ARGV: id. Removes the node's entry and its rooms (a clean stop).
const UNREGISTER: &str = "forget(ARGV[1]) return 1";

/// The scripts' full text, library included.
pub struct Sources {
    pub heartbeat: String,
    pub list: String,
    pub resolve: String,
    pub release: String,
    pub alive: String,
    pub unregister: String,
    pub start: String,
}

impl Sources {
    pub fn new(ttl: Duration) -> Sources {
        let lib = LIB
            .replace("{ttl}", &ttl.as_millis().to_string())
            .replace("{gap}", &GAP.as_millis().to_string())
            .replace("{schema}", SCHEMA);
        let with_lib = |body: &str| format!("{lib}\n{body}");
        Sources {
            heartbeat: with_lib(HEARTBEAT),
            list: with_lib(LIST),
            resolve: with_lib(RESOLVE),
            release: RELEASE.to_string(),
            alive: with_lib(ALIVE),
            unregister: with_lib(UNREGISTER),
            start: with_lib(START),
        }
    }
}
