#!lua name=mqmi3
-- The mqueue engine's server-side half (docs/redis.md): every queue operation is one
-- FCALL of one of these functions, run atomically by Redis.
--
-- Version 3 of the key layout below: the library and its functions carry the number
-- (mqmi3, mqmi3_add...), so servers of different versions can share one Redis, and a
-- queue records the version that made it (meta v), which mq_define checks.
--
-- A queue q is four keys, all with the hash tag {q} so they share one cluster slot, and
-- every function gets all four in KEYS (in this order):
--   KEYS[1] meta   hash: h head seq, t tail seq (absent when empty), s last seq given out,
--                  n items queued, a/f/ds/dm the counters (added, fetched, dropped by size,
--                  dropped by addmode), ba/bf/bds/bdm their reset baselines, lim the size
--                  limit (0 unlimited), mode the effective addmode
--   KEYS[2] items  hash: <seq> -> "<key length>:<key><value>", n<seq> -> the next (newer)
--                  seq (absent for the tail), p<seq> -> the previous one (absent for the
--                  head): the queue is a doubly linked list threaded through this hash;
--                  c<seq> -> how many times a consumer claimed the item (mq_claim)
--   KEYS[3] index  hash: key -> seq of the queued item with that key (addmode 1 and 2)
--   KEYS[4] held   sorted set: seq scored by its deadline (ms, Redis clock), for every
--                  item taken conditionally (mq_hold, mq_claim) and not settled yet
-- Taking the head, appending at the tail and unlinking any item (addmode 2) are each a
-- fixed number of hash commands: O(1).  A record and its links sit in one hash so that
-- one HMGET reads them and one HDEL removes them.  A held item leaves the list but keeps
-- its record until it is settled; the held set costs O(log h), h the items held at once
-- (consumers x batch, MI replies in flight), never the queue's length.
--
-- Errors: "UNDEFINED" when the queue's meta is missing (a Redis that lost its data): the
-- client defines the queue again and retries.

local function key_of(item)
  local c = string.find(item, ':', 1, true)
  local kl = tonumber(string.sub(item, 1, c - 1))
  return string.sub(item, c + 1, c + kl)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Take seq out of the linked list anywhere; its record stays (the caller drops it or,
-- for a hold, keeps it).  Updates meta's h/t.
local function unlink(K, seq)
  local l = redis.call('HMGET', K[2], 'n' .. seq, 'p' .. seq)
  local nx, pv = l[1], l[2]
  if pv then
    if nx then redis.call('HSET', K[2], 'n' .. pv, nx) else redis.call('HDEL', K[2], 'n' .. pv) end
  elseif nx then
    redis.call('HSET', K[1], 'h', nx)
  else
    redis.call('HDEL', K[1], 'h')
  end
  if nx then
    if pv then redis.call('HSET', K[2], 'p' .. nx, pv) else redis.call('HDEL', K[2], 'p' .. nx) end
  elseif pv then
    redis.call('HSET', K[1], 't', pv)
  else
    redis.call('HDEL', K[1], 't')
  end
  redis.call('HDEL', K[2], 'n' .. seq, 'p' .. seq)
end

-- Remove up to limit items from the head, records and index entries included; returns
-- the records, oldest first.  h: the head seq.  Leaves meta's h/t/n to the caller.
local function pop_heads(K, mode, h, limit, out)
  while h and #out < limit do
    local r = redis.call('HMGET', K[2], h, 'n' .. h)
    local item, nx = r[1], r[2]
    if nx then
      redis.call('HDEL', K[2], h, 'c' .. h, 'n' .. h, 'p' .. nx)
    else
      redis.call('HDEL', K[2], h, 'c' .. h)
    end
    if mode ~= 0 then redis.call('HDEL', K[3], key_of(item)) end
    out[#out + 1] = item
    h = nx
  end
  return h
end

-- After items were taken from the head: h the new head (nil: the queue is empty), n the
-- count and f the fetched counter, written in one command where the head stays.
local function set_head(K, h, n, f)
  if h then
    redis.call('HSET', K[1], 'h', h, 'n', n, 'f', f)
  else
    redis.call('HDEL', K[1], 'h', 't')
    redis.call('HSET', K[1], 'n', n, 'f', f)
  end
end

-- Evict from the head while the queue is over its limit; the new count.
local function evict(K, mode, lim, n)
  if lim == 0 or n <= lim then return n end
  local gone = {}
  local h = pop_heads(K, mode, redis.call('HGET', K[1], 'h'), n - lim, gone)
  if h then redis.call('HSET', K[1], 'h', h) else redis.call('HDEL', K[1], 'h', 't') end
  redis.call('HINCRBY', K[1], 'ds', #gone)
  return n - #gone
end

-- Put a held item back at the head (it was the head when taken: it is older than every
-- item queued since).  Its fetch is undone; if its key was queued again meanwhile (addmode
-- 1 or 2), it is dropped by addmode instead, and a full queue evicts it as its oldest.
local function give_back(K, seq, mode, lim)
  redis.call('ZREM', K[4], seq)
  redis.call('HINCRBY', K[1], 'f', -1)
  local item = redis.call('HGET', K[2], seq)
  if mode ~= 0 then
    local key = key_of(item)
    if redis.call('HEXISTS', K[3], key) == 1 then
      redis.call('HDEL', K[2], seq, 'c' .. seq)
      redis.call('HINCRBY', K[1], 'dm', 1)
      return
    end
    redis.call('HSET', K[3], key, seq)
  end
  local h = redis.call('HGET', K[1], 'h')
  if h then
    redis.call('HSET', K[2], 'n' .. seq, h, 'p' .. h, seq)
  else
    redis.call('HSET', K[1], 't', seq)
  end
  redis.call('HSET', K[1], 'h', seq)
  local n = redis.call('HINCRBY', K[1], 'n', 1)
  local left = evict(K, mode, lim, n)
  if left ~= n then redis.call('HSET', K[1], 'n', left) end
end

-- Held items whose deadline passed (their holder died, stalled, failed or let go) go
-- back to the queue, at most `most` per call: O(most + log h).  They are given back
-- newest first, each to the head, so that those coming back together keep their order.
local function reclaim(K, mode, lim, most)
  if redis.call('ZCARD', K[4]) == 0 then return end
  local due = redis.call('ZRANGEBYSCORE', K[4], '-inf', now_ms(), 'LIMIT', 0, most)
  table.sort(due, function(x, y) return tonumber(x) > tonumber(y) end)
  for _, seq in ipairs(due) do give_back(K, seq, mode, lim) end
end

local RECLAIM = 16

local LAYOUT = 3

-- mq_define(limit, mode): store the definition, or return the stored one
-- {lim, mode, layout version}.
local function mq_define(K, A)
  local m = redis.call('HMGET', K[1], 'lim', 'mode', 'v')
  if m[1] then return {tonumber(m[1]), tonumber(m[2]), tonumber(m[3] or 1)} end
  redis.call('HSET', K[1], 'lim', A[1], 'mode', A[2], 'v', LAYOUT, 's', 0, 'n', 0, 'a', 0,
             'f', 0, 'ds', 0, 'dm', 0, 'ba', 0, 'bf', 0, 'bds', 0, 'bdm', 0)
  return {tonumber(A[1]), tonumber(A[2]), LAYOUT}
end

-- mq_add(key, value): queue it by the addmode and size rules; 1.
local function mq_add(K, A)
  local m = redis.call('HMGET', K[1], 'mode', 'lim', 't', 's', 'n', 'a')
  if not m[1] then return redis.error_reply('UNDEFINED') end
  local mode, lim, t = tonumber(m[1]), tonumber(m[2]), m[3]
  local seq, n, a = tonumber(m[4]) + 1, tonumber(m[5]), tonumber(m[6]) + 1
  local key, value = A[1], A[2]
  if mode ~= 0 then
    local old = redis.call('HGET', K[3], key)
    if old then
      redis.call('HINCRBY', K[1], 'dm', 1)
      if mode == 1 then
        redis.call('HSET', K[1], 'a', a)
        return 1
      end
      unlink(K, old)
      redis.call('HDEL', K[2], old, 'c' .. old)
      n = n - 1
      t = redis.call('HGET', K[1], 't')
    end
    redis.call('HSET', K[3], key, seq)
  end
  local item = #key .. ':' .. key .. value
  if t then
    redis.call('HSET', K[2], seq, item, 'n' .. t, seq, 'p' .. seq, t)
    redis.call('HSET', K[1], 't', seq, 's', seq, 'n', n + 1, 'a', a)
  else
    redis.call('HSET', K[2], seq, item)
    redis.call('HSET', K[1], 'h', seq, 't', seq, 's', seq, 'n', n + 1, 'a', a)
  end
  if lim > 0 and n + 1 > lim then
    redis.call('HSET', K[1], 'n', evict(K, mode, lim, n + 1))
  end
  return 1
end

-- mq_fetch(limit): up to limit items from the head, oldest first.
local function mq_fetch(K, A)
  local m = redis.call('HMGET', K[1], 'mode', 'lim', 'n', 'f', 'h')
  if not m[1] then return redis.error_reply('UNDEFINED') end
  local mode, lim = tonumber(m[1]), tonumber(m[2])
  if redis.call('ZCARD', K[4]) > 0 then  -- holds that may have ended: reclaim first
    reclaim(K, mode, lim, RECLAIM)
    m = redis.call('HMGET', K[1], 'mode', 'lim', 'n', 'f', 'h')
  end
  local out = {}
  local h = pop_heads(K, mode, m[5], tonumber(A[1]), out)
  if #out == 0 then return out end
  set_head(K, h, tonumber(m[3]) - #out, tonumber(m[4]) + #out)
  return out
end

-- mq_settle(seq, commit): 1, or 0 when the hold had ended already (given back).
local function mq_settle(K, A)
  local seq = A[1]
  if not redis.call('ZSCORE', K[4], seq) then return 0 end
  if A[2] == '1' then
    redis.call('ZREM', K[4], seq)
    redis.call('HDEL', K[2], seq, 'c' .. seq)
  else
    local m = redis.call('HMGET', K[1], 'mode', 'lim')
    give_back(K, seq, tonumber(m[1]), tonumber(m[2]))
  end
  return 1
end

-- mq_hold(lease_ms, limit): take up to limit head items pending: {seq, item, seq,
-- item...}, oldest first, or {} when empty.  They count as fetched and nobody else sees
-- them; mq_settle (one item) or mq_settle_many commits or gives them back, and a holder
-- that never settles gets them given back once the lease ends.  O(limit log h).
local function mq_hold(K, A)
  local m = redis.call('HMGET', K[1], 'mode', 'lim')
  if not m[1] then return redis.error_reply('UNDEFINED') end
  local mode, lim, limit = tonumber(m[1]), tonumber(m[2]), tonumber(A[2])
  reclaim(K, mode, lim, RECLAIM)
  local deadline, out, taken = now_ms() + tonumber(A[1]), {}, 0
  local h = redis.call('HGET', K[1], 'h')
  while h and taken < limit do
    local item = redis.call('HGET', K[2], h)
    local nx = redis.call('HGET', K[2], 'n' .. h)
    unlink(K, h)
    if mode ~= 0 then redis.call('HDEL', K[3], key_of(item)) end
    redis.call('ZADD', K[4], deadline, h)
    out[#out + 1] = h
    out[#out + 1] = item
    taken = taken + 1
    h = nx
  end
  if taken > 0 then
    redis.call('HINCRBY', K[1], 'n', -taken)
    redis.call('HINCRBY', K[1], 'f', taken)
  end
  return out
end

-- mq_settle_many(commit, seq...): mq_settle for what a bulk mq_hold took (seqs oldest
-- first): 1, or 0 when any hold had ended already (those were given back; the rest is
-- settled as asked).  Given back newest first, each to the head: the order is kept.
local function mq_settle_many(K, A)
  local all, m = 1, nil
  for i = #A, 2, -1 do
    local seq = A[i]
    if not redis.call('ZSCORE', K[4], seq) then
      all = 0
    elseif A[1] == '1' then
      redis.call('ZREM', K[4], seq)
      redis.call('HDEL', K[2], seq, 'c' .. seq)
    else
      m = m or redis.call('HMGET', K[1], 'mode', 'lim')
      give_back(K, seq, tonumber(m[1]), tonumber(m[2]))
    end
  end
  return all
end

-- mq_claim(limit, lease_ms): at-least-once delivery to a consumer.  Up to limit items
-- from the head, each held until its deadline (now + lease_ms) unless mq_ack settles it
-- first: {seq, item, claims, seq, item, claims...}, claims counting this one.  Held items
-- whose deadline passed are given back first (up to limit + RECLAIM of them), so a dead
-- consumer's items go to the next claim once their lease ends.  O(limit log h).
local function mq_claim(K, A)
  local m = redis.call('HMGET', K[1], 'mode', 'lim')
  if not m[1] then return redis.error_reply('UNDEFINED') end
  local mode, lim, limit = tonumber(m[1]), tonumber(m[2]), tonumber(A[1])
  reclaim(K, mode, lim, limit + RECLAIM)
  m = redis.call('HMGET', K[1], 'h', 'n', 'f')
  local h, out, taken = m[1], {}, 0
  if not h then return out end
  local deadline = now_ms() + tonumber(A[2])
  while h and taken < limit do
    local r = redis.call('HMGET', K[2], h, 'n' .. h)
    local item, nx = r[1], r[2]
    if nx then redis.call('HDEL', K[2], 'n' .. h, 'p' .. nx) end
    if mode ~= 0 then redis.call('HDEL', K[3], key_of(item)) end
    local claims = redis.call('HINCRBY', K[2], 'c' .. h, 1)
    redis.call('ZADD', K[4], deadline, h)
    out[#out + 1] = h
    out[#out + 1] = item
    out[#out + 1] = claims
    taken = taken + 1
    h = nx
  end
  set_head(K, h, tonumber(m[2]) - taken, tonumber(m[3]) + taken)
  return out
end

-- mq_ack(seq...): the claimed items are handled: drop them.  How many were still held
-- (one whose deadline passed may have been given back and claimed again: not dropped).
-- O(k log h).
local function mq_ack(K, A)
  local done = 0
  for _, seq in ipairs(A) do
    local deadline = redis.call('ZSCORE', K[4], seq)
    if deadline and redis.call('HEXISTS', K[2], 'c' .. seq) == 1 then
      redis.call('ZREM', K[4], seq)
      redis.call('HDEL', K[2], seq, 'c' .. seq)
      done = done + 1
    end
  end
  return done
end

-- mq_renew(ms, seq...): move the deadlines of claimed items still held to now + ms (a
-- longer lease for a slow batch; 0 gives them back at the next claim or fetch, and
-- a short delay retries a failed one).  How many were still held.  O(k log h).
local function mq_renew(K, A)
  local deadline, done = now_ms() + tonumber(A[1]), 0
  for i = 2, #A do
    if redis.call('ZSCORE', K[4], A[i]) and redis.call('HEXISTS', K[2], 'c' .. A[i]) == 1 then
      redis.call('ZADD', K[4], deadline, A[i])
      done = done + 1
    end
  end
  return done
end

-- mq_snapshot(): every queued item, oldest first (O(n): for saves and checks).
local function mq_snapshot(K, A)
  if not redis.call('HGET', K[1], 'mode') then return redis.error_reply('UNDEFINED') end
  local out = {}
  local seq = redis.call('HGET', K[1], 'h')
  while seq do
    local r = redis.call('HMGET', K[2], seq, 'n' .. seq)
    out[#out + 1] = r[1]
    seq = r[2]
  end
  return out
end

-- mq_reset(counter...): move the named counters' baselines to their current values.
local function mq_reset(K, A)
  if not redis.call('HGET', K[1], 'mode') then return redis.error_reply('UNDEFINED') end
  for _, c in ipairs(A) do
    redis.call('HSET', K[1], 'b' .. c, redis.call('HGET', K[1], c))
  end
  return 1
end

-- Flags: what takes items out (and the few words of a hold or a reset) may run when Redis
-- is at maxmemory ('allow-oom'), so that a full Redis can still be drained; an add there
-- is refused before it runs (redis-py's OutOfMemoryError: the engine's ArenaFull).
local function register(name, callback, flags)
  redis.register_function{function_name='mqmi3_' .. name, callback=callback, flags=flags}
end
register('define', mq_define, {})
register('add', mq_add, {})
register('fetch', mq_fetch, {'allow-oom'})
register('hold', mq_hold, {'allow-oom'})
register('settle', mq_settle, {'allow-oom'})
register('settle_many', mq_settle_many, {'allow-oom'})
register('snapshot', mq_snapshot, {'no-writes'})
register('reset', mq_reset, {'allow-oom'})
register('claim', mq_claim, {'allow-oom'})
register('ack', mq_ack, {'allow-oom'})
register('renew', mq_renew, {'allow-oom'})
