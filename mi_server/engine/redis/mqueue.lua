#!lua name=mqueue_mi
-- The mqueue engine's server-side half (docs/redis.md): every queue operation is one
-- FCALL of one of these functions, run atomically by Redis.
--
-- A queue q is seven keys, all with the hash tag {q} so they share one cluster slot, and
-- every function gets all seven in KEYS (in this order):
--   KEYS[1] meta   hash: h head seq, t tail seq (absent when empty), s last seq given out,
--                  n items queued, a/f/ds/dm the counters (added, fetched, dropped by size,
--                  dropped by addmode), ba/bf/bds/bdm their reset baselines, lim the size
--                  limit (0 unlimited), mode the effective addmode
--   KEYS[2] items  hash: seq -> "<key length>:<key><value>"
--   KEYS[3] next   hash: seq -> the next (newer) seq; absent for the tail
--   KEYS[4] prev   hash: seq -> the previous (older) seq; absent for the head
--   KEYS[5] index  hash: key -> seq of the queued item with that key (addmode 1 and 2)
--   KEYS[6] held   hash: seq -> deadline (ms, Redis clock) of an item fetched pending
--   KEYS[7] order  list: held seqs in the order they were taken (= deadline order)
-- The queue is a doubly linked list threaded through those hashes, so taking the head,
-- appending at the tail and unlinking any item (addmode 2) are each O(1).  A held item
-- leaves the list but keeps its record in items until it is settled.
--
-- Errors: "UNDEFINED" when the queue's meta is missing (a Redis that lost its data): the
-- client defines the queue again and retries.

local function key_of(item)
  local c = string.find(item, ':', 1, true)
  local kl = tonumber(string.sub(item, 1, c - 1))
  return string.sub(item, c + 1, c + kl)
end

-- Take seq out of the linked list (its record in items is left to the caller).
local function unlink(K, seq)
  local nx = redis.call('HGET', K[3], seq)
  local pv = redis.call('HGET', K[4], seq)
  if pv then
    if nx then redis.call('HSET', K[3], pv, nx) else redis.call('HDEL', K[3], pv) end
  elseif nx then
    redis.call('HSET', K[1], 'h', nx)
  else
    redis.call('HDEL', K[1], 'h')
  end
  if nx then
    if pv then redis.call('HSET', K[4], nx, pv) else redis.call('HDEL', K[4], nx) end
    redis.call('HDEL', K[3], seq)
  elseif pv then
    redis.call('HSET', K[1], 't', pv)
  else
    redis.call('HDEL', K[1], 't')
  end
  if pv then redis.call('HDEL', K[4], seq) end
end

-- Remove the head item: its record, its index entry; returns (seq, item) or nil.
local function drop_head(K, mode)
  local h = redis.call('HGET', K[1], 'h')
  if not h then return nil end
  local item = redis.call('HGET', K[2], h)
  unlink(K, h)
  redis.call('HDEL', K[2], h)
  if mode ~= 0 then redis.call('HDEL', K[5], key_of(item)) end
  return h, item
end

local function evict(K, mode, lim, n)
  while lim > 0 and n > lim do
    drop_head(K, mode)
    n = n - 1
    redis.call('HINCRBY', K[1], 'ds', 1)
  end
  return n
end

-- Put a held item back at the head (it was the head when taken: it is older than every
-- item queued since).  Its fetch is undone; if its key was queued again meanwhile (addmode
-- 1 or 2), it is dropped by addmode instead, and a full queue evicts it as its oldest.
local function give_back(K, seq, mode, lim)
  redis.call('HDEL', K[6], seq)
  redis.call('HINCRBY', K[1], 'f', -1)
  local item = redis.call('HGET', K[2], seq)
  if mode ~= 0 then
    local key = key_of(item)
    if redis.call('HEXISTS', K[5], key) == 1 then
      redis.call('HDEL', K[2], seq)
      redis.call('HINCRBY', K[1], 'dm', 1)
      return
    end
    redis.call('HSET', K[5], key, seq)
  end
  local h = redis.call('HGET', K[1], 'h')
  if h then
    redis.call('HSET', K[3], seq, h)
    redis.call('HSET', K[4], h, seq)
  else
    redis.call('HSET', K[1], 't', seq)
  end
  redis.call('HSET', K[1], 'h', seq)
  local n = redis.call('HINCRBY', K[1], 'n', 1)
  local left = evict(K, mode, lim, n)
  if left ~= n then redis.call('HSET', K[1], 'n', left) end
end

-- Held items whose deadline passed (their holder died or stalled) go back to the queue;
-- settled ones are dropped from the front of the order list.  Bounded work per call;
-- each seq enters the list once, so this is O(1) amortised.
local function reclaim(K, mode, lim)
  local now = nil
  for _ = 1, 16 do
    local seq = redis.call('LINDEX', K[7], 0)
    if not seq then return end
    local deadline = redis.call('HGET', K[6], seq)
    if deadline then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      if tonumber(deadline) > now then return end
      give_back(K, seq, mode, lim)
    end
    redis.call('LPOP', K[7])
  end
end

local function meta(K)
  local m = redis.call('HMGET', K[1], 'mode', 'lim')
  if not m[1] then return nil end
  return tonumber(m[1]), tonumber(m[2])
end

-- mq_define(limit, mode): store the definition, or return the stored one {lim, mode}.
local function mq_define(K, A)
  local m = redis.call('HMGET', K[1], 'lim', 'mode')
  if m[1] then return {tonumber(m[1]), tonumber(m[2])} end
  redis.call('HSET', K[1], 'lim', A[1], 'mode', A[2], 's', 0, 'n', 0, 'a', 0, 'f', 0,
             'ds', 0, 'dm', 0, 'ba', 0, 'bf', 0, 'bds', 0, 'bdm', 0)
  return {tonumber(A[1]), tonumber(A[2])}
end

-- mq_add(key, value): queue it by the addmode and size rules; 1.
local function mq_add(K, A)
  local m = redis.call('HMGET', K[1], 'mode', 'lim', 't', 's', 'n')
  if not m[1] then return redis.error_reply('UNDEFINED') end
  local mode, lim, t = tonumber(m[1]), tonumber(m[2]), m[3]
  local seq, n = tonumber(m[4]) + 1, tonumber(m[5])
  local key, value = A[1], A[2]
  if mode ~= 0 then
    local old = redis.call('HGET', K[5], key)
    if old then
      redis.call('HINCRBY', K[1], 'a', 1)
      redis.call('HINCRBY', K[1], 'dm', 1)
      if mode == 1 then return 1 end
      unlink(K, old)
      redis.call('HDEL', K[2], old)
      n = n - 1
      t = redis.call('HGET', K[1], 't')
    else
      redis.call('HINCRBY', K[1], 'a', 1)
    end
    redis.call('HSET', K[5], key, seq)
  else
    redis.call('HINCRBY', K[1], 'a', 1)
  end
  redis.call('HSET', K[2], seq, #key .. ':' .. key .. value)
  if t then
    redis.call('HSET', K[3], t, seq)
    redis.call('HSET', K[4], seq, t)
  else
    redis.call('HSET', K[1], 'h', seq)
  end
  n = evict(K, mode, lim, n + 1)
  redis.call('HSET', K[1], 't', seq, 's', seq, 'n', n)
  return 1
end

-- mq_fetch(limit): up to limit items from the head, oldest first.
local function mq_fetch(K, A)
  local mode, lim = meta(K)
  if not mode then return redis.error_reply('UNDEFINED') end
  reclaim(K, mode, lim)
  local out = {}
  local limit = tonumber(A[1])
  while #out < limit do
    local _, item = drop_head(K, mode)
    if not item then break end
    out[#out + 1] = item
  end
  if #out > 0 then
    redis.call('HINCRBY', K[1], 'n', -#out)
    redis.call('HINCRBY', K[1], 'f', #out)
  end
  return out
end

-- mq_hold(lease_ms): take the head item pending: {seq, item}, or {} when empty.  It
-- counts as fetched and nobody else sees it; mq_settle commits or gives it back, and a
-- holder that never settles gets it given back once the lease ends.
local function mq_hold(K, A)
  local mode, lim = meta(K)
  if not mode then return redis.error_reply('UNDEFINED') end
  reclaim(K, mode, lim)
  local h = redis.call('HGET', K[1], 'h')
  if not h then return {} end
  local item = redis.call('HGET', K[2], h)
  unlink(K, h)
  if mode ~= 0 then redis.call('HDEL', K[5], key_of(item)) end
  redis.call('HINCRBY', K[1], 'n', -1)
  redis.call('HINCRBY', K[1], 'f', 1)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', K[6], h, now + tonumber(A[1]))
  redis.call('RPUSH', K[7], h)
  return {h, item}
end

-- mq_settle(seq, commit): 1, or 0 when the hold had ended already (given back).
local function mq_settle(K, A)
  local seq = A[1]
  if redis.call('HEXISTS', K[6], seq) == 0 then return 0 end
  if A[2] == '1' then
    redis.call('HDEL', K[6], seq)
    redis.call('HDEL', K[2], seq)
  else
    local mode, lim = meta(K)
    give_back(K, seq, mode, lim)
  end
  if redis.call('LINDEX', K[7], 0) == seq then redis.call('LPOP', K[7]) end
  return 1
end

-- mq_snapshot(): every queued item, oldest first (O(n): for saves and checks).
local function mq_snapshot(K, A)
  if not redis.call('HGET', K[1], 'mode') then return redis.error_reply('UNDEFINED') end
  local out = {}
  local seq = redis.call('HGET', K[1], 'h')
  while seq do
    out[#out + 1] = redis.call('HGET', K[2], seq)
    seq = redis.call('HGET', K[3], seq)
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
redis.register_function('mq_define', mq_define)
redis.register_function('mq_add', mq_add)
redis.register_function{function_name='mq_fetch', callback=mq_fetch, flags={'allow-oom'}}
redis.register_function{function_name='mq_hold', callback=mq_hold, flags={'allow-oom'}}
redis.register_function{function_name='mq_settle', callback=mq_settle, flags={'allow-oom'}}
redis.register_function{function_name='mq_snapshot', callback=mq_snapshot,
                        flags={'no-writes'}}
redis.register_function{function_name='mq_reset', callback=mq_reset, flags={'allow-oom'}}
