//! The Lua scripts of the registry and room directory ([`super::store`]). Each runs atomically
//! in Redis.
//!
//! Keys (one Redis instance; Redis Cluster is not supported):
//! - `choir:node:<id>`: the node's entry (JSON, with its incarnation), rewritten every heartbeat.
//! - `choir:live`: node ids scored by their last heartbeat (Redis's clock, ms).
//! - `choir:room:<channelId>`: the owner's id in the region "" (nodes without `--region`; a
//!   cluster without regions uses only this key, as before regions existed).
//! - `choir:regions:<channelId>`: a hash, region → the room's node in that region, for the
//!   regions other than "" (written only by nodes with a region). A room has one node per
//!   region; its node set is this hash plus `choir:room:<channelId>`.
//! - `choir:rooms:<id>`: the channels placed on a
//!   node (whatever region entry names it), scored by placement time (ms), for its room count, its sweep, and clean-up after it
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

/// Lua of the room directory's entries (no clock: [`RELEASE`] runs with this alone).
const OWNERS: &str = r#"
-- The room's node in a region ('' = no region: the key of a cluster without regions).
local function owner_of(c, r)
  if r == '' then return redis.call('GET', 'choir:room:' .. c) end
  return redis.call('HGET', 'choir:regions:' .. c, r)
end
local function set_owner(c, r, id)
  if r == '' then redis.call('SET', 'choir:room:' .. c, id)
  else redis.call('HSET', 'choir:regions:' .. c, r, id) end
end
local function del_owner(c, r)
  if r == '' then redis.call('DEL', 'choir:room:' .. c)
  else redis.call('HDEL', 'choir:regions:' .. c, r) end
end
-- The room's node set: {region, id, region, id, ...}.
local function owners(c)
  local out = {}
  local o = redis.call('GET', 'choir:room:' .. c)
  if o then table.insert(out, ''); table.insert(out, o) end
  local h = redis.call('HGETALL', 'choir:regions:' .. c)
  for i = 1, #h do table.insert(out, h[i]) end
  return out
end
-- Whether `id` carries the room in some region.
local function carries(c, id)
  local o = owners(c)
  for i = 2, #o, 2 do
    if o[i] == id then return true end
  end
  return false
end
-- Removes the room's entries that name `id` (every region).
local function drop(c, id)
  local o = owners(c)
  for i = 1, #o, 2 do
    if o[i + 1] == id then del_owner(c, o[i]) end
  end
end
"#;

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
    drop(c, id)
  end
  redis.call('DEL', 'choir:rooms:' .. id, 'choir:busy:' .. id)
end
-- A node's region, from its entry JSON ('' without one).
local function region_of(raw)
  local ok, e = pcall(cjson.decode, raw)
  if ok and type(e) == 'table' and type(e.region) == 'string' then return e.region end
  return ''
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

/// ARGV: id, entry JSON (its `region` is the node's), sweep age ms, first (1: this process's
/// first write: rooms left by an earlier process with the same id are forgotten), the epoch the
/// node saw last ('' if none), n, n ids of the nodes it knew, then channel, participants pairs:
/// the rooms it has.
///
/// A room whose directory names the node in some region is the node's already. Any other is
/// claimed for the node's region unless another node not lost owns it there with at least as
/// many live participants (as of its last heartbeat); those are yielded. Returns {epoch, {id,
/// entry, rooms, ...}, {channels placed here older than the sweep age}, {channel, owner, ...}
/// yielded, {channel, n, region, id, ... (n pairs)}: the node sets of the rooms kept}.
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
local region = region_of(ARGV[2])
local busy = 'choir:busy:' .. id
redis.call('DEL', busy)
local yielded, sets = {}, {}
local i = 7 + n
while i < #ARGV do
  local c, p = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local owner = owner_of(c, region)
  local mine = not owner or owner == id or not known(owner) or carries(c, id)
  if not mine then
    local theirs = tonumber(redis.call('HGET', 'choir:busy:' .. owner, c)) or 0
    if p > theirs then
      mine = true
      redis.call('ZREM', 'choir:rooms:' .. owner, c)
      redis.call('HDEL', 'choir:busy:' .. owner, c)
    end
  end
  if mine then
    if not carries(c, id) then set_owner(c, region, id) end
    redis.call('ZADD', 'choir:rooms:' .. id, 'NX', NOW, c)
    if p > 0 then redis.call('HSET', busy, c, p) end
    local o = owners(c)
    table.insert(sets, c)
    table.insert(sets, #o / 2)
    for j = 1, #o do table.insert(sets, o[j]) end
  else
    table.insert(yielded, c)
    table.insert(yielded, owner)
  end
end
local old = redis.call('ZRANGEBYSCORE', 'choir:rooms:' .. id, '-inf', NOW - tonumber(ARGV[3]))
return {epoch, list(), old, yielded, sets}
"#;

/// ARGV: none. Returns {id, entry, rooms, ...}.
const LIST: &str = "return list()";

/// ARGV: channel, region, seed, place (0/1), member ('' or a node id). Returns {status, owner,
/// entry}: status 0 = found, 1 = placed now, 2 = not placed (place = 0), 3 = no node can take
/// it, 4 = unknown while the directory is rebuilt after a gap (see `settled`).
///
/// The owner is the room's node in `region` (one per room and region). Placement: serving
/// nodes under their room limit with a heartbeat within a TTL, those of `region` the least
/// loaded (rooms placed on it, counted here atomically, plus participants and consumers of its
/// last heartbeat), ties broken by `seed`; when `region` has none, a node that carries the room
/// in another region, else the least loaded of any region.
///
/// With a `member` (a request another node forwarded here): found (0) when the directory names
/// `member` in any region, else 2 (4 while rebuilding and the room has no node at all).
const RESOLVE: &str = r#"
local c, region = ARGV[1], ARGV[2]
if ARGV[5] ~= '' then
  if carries(c, ARGV[5]) then
    return {0, ARGV[5], redis.call('GET', 'choir:node:' .. ARGV[5]) or ''}
  end
  if #owners(c) == 0 and not settled() then return {4, '', ''} end
  return {2, '', ''}
end
local owner = owner_of(c, region)
if owner then
  if known(owner) then
    return {0, owner, redis.call('GET', 'choir:node:' .. owner) or ''}
  end
  del_owner(c, region)
  redis.call('ZREM', 'choir:rooms:' .. owner, c)
end
if not settled() then return {4, '', ''} end
if ARGV[4] == '0' then return {2, '', ''} end
local has = {}
local o = owners(c)
for i = 2, #o, 2 do has[o[i]] = true end
local same, here, any = {}, {}, {}
local min_same, min_here, min_any
local function consider(pool, min, load, id, raw)
  if min == nil or load < min then
    for k in pairs(pool) do pool[k] = nil end
    min = load
  end
  if load == min then table.insert(pool, {id, raw}) end
  return min
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', 'choir:live', NOW - TTL_MS, '+inf')) do
  local raw = redis.call('GET', 'choir:node:' .. id)
  if raw then
    local ok, e = pcall(cjson.decode, raw)
    if ok and e.state == 'serving' then
      local rooms = redis.call('ZCARD', 'choir:rooms:' .. id)
      local max = tonumber(e.maxRooms) or 0
      if max == 0 or rooms < max or has[id] then
        local load = rooms + (tonumber(e.participants) or 0) + (tonumber(e.consumers) or 0)
        min_any = consider(any, min_any, load, id, raw)
        if has[id] then min_here = consider(here, min_here, load, id, raw) end
        if (e.region or '') == region then
          min_same = consider(same, min_same, load, id, raw)
        end
      end
    end
  end
end
local pool = same
if #pool == 0 then pool = here end
if #pool == 0 then pool = any end
if #pool == 0 then return {3, '', ''} end
local pick = pool[(tonumber(ARGV[3]) % #pool) + 1]
set_owner(c, region, pick[1])
if has[pick[1]] then
  redis.call('ZADD', 'choir:rooms:' .. pick[1], 'NX', NOW, c)
else
  redis.call('ZADD', 'choir:rooms:' .. pick[1], NOW, c)
end
return {1, pick[1], pick[2]}
"#;

/// ARGV: channels... Returns {channel, n, region, id, ... (n pairs), ...}: each room's node
/// set, the nodes not lost.
const ROOM_NODES: &str = r#"
local out = {}
for i = 1, #ARGV do
  local c = ARGV[i]
  local o = owners(c)
  local kept = {}
  for j = 1, #o, 2 do
    if known(o[j + 1]) then
      table.insert(kept, o[j])
      table.insert(kept, o[j + 1])
    end
  end
  table.insert(out, c)
  table.insert(out, #kept / 2)
  for j = 1, #kept do table.insert(out, kept[j]) end
end
return out
"#;

/// ARGV: id, channels... Removes the channels' entries (every region) that name `id`.
const RELEASE: &str = r#"
local id = ARGV[1]
for i = 2, #ARGV do
  local c = ARGV[i]
  drop(c, id)
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
    pub room_nodes: String,
    pub release: String,
    pub alive: String,
    pub unregister: String,
    pub start: String,
}

impl Sources {
    pub fn new(ttl: Duration) -> Sources {
        let lib = format!("{OWNERS}\n{LIB}")
            .replace("{ttl}", &ttl.as_millis().to_string())
            .replace("{gap}", &GAP.as_millis().to_string())
            .replace("{schema}", SCHEMA);
        let with_lib = |body: &str| format!("{lib}\n{body}");
        Sources {
            heartbeat: with_lib(HEARTBEAT),
            list: with_lib(LIST),
            resolve: with_lib(RESOLVE),
            room_nodes: with_lib(ROOM_NODES),
            release: format!("{OWNERS}\n{RELEASE}"),
            alive: with_lib(ALIVE),
            unregister: with_lib(UNREGISTER),
            start: with_lib(START),
        }
    }
}
