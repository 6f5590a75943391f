#!lua name=mqmi4
-- The mqueue engine's server-side half (docs/redis.md): every queue operation is one
-- FCALL of one of these functions, run atomically by Redis.
--
-- Version 4 of the key layout below: the library and its functions carry the number
-- (mqmi4, mqmi4_add...), so servers of different versions can share one Redis, and a
-- queue records the version that made it (meta v), which mq_define checks.
--
-- A queue q is four keys, all with the hash tag {q} so they share one cluster slot, and
-- every function gets all four in KEYS (in this order):
--   KEYS[1] meta   hash: h head seq, t tail seq (absent when empty), s last seq given out,
--                  n items queued, f/ds/dm the counters (fetched, dropped by size, dropped
--                  by addmode; added is n + f + ds + dm, not stored), ba/bf/bds/bdm the
--                  reset baselines, lim the size limit (0 unlimited), mode the effective
--                  addmode, v the layout version, z the pad (below)
--   KEYS[2] items  hash: <seq> -> "<key length>:<key><value>", n<seq> -> the next (newer)
--                  seq (absent for the tail), p<seq> -> the previous one (absent for the
--                  head): the queue is a doubly linked list threaded through this hash;
--                  c<seq> -> how many times a consumer claimed the item (mq_claim); z the pad
--   KEYS[3] index  hash: key -> seq of the queued item with that key (addmode 1 and 2);
--                  "\255" the pad (no key the client sends holds a 0xFF byte: UTF-8)
--   KEYS[4] held   sorted set: seq scored by its deadline (ms, Redis clock), for every
--                  item taken conditionally (mq_hold, mq_claim) and not settled yet
-- The pad is a field whose 65-byte value keeps its hash in Redis's hashtable encoding: a
-- hash of up to 512 fields of at most 64 bytes is otherwise a listpack, which every
-- command searches field by field (a queue of a hundred items made every operation walk
-- hundreds of fields).
-- Taking the head, appending at the tail and unlinking any item (addmode 2) are each a
-- fixed number of hash commands: O(1).  A record and its links sit in one hash so that
-- one HMGET reads them and one HDEL removes them; the writes of a bulk take are batched.
-- A held item leaves the list but keeps its record until it is settled; the held set
-- costs O(log h), h the items held at once (consumers x batch, MI replies in flight),
-- never the queue's length.
--
-- Numbers go to Redis as strings made by str (an integer format): a Lua number given to
-- redis.call or joined to a string is printed as a float, which costs several times more.
--
-- Errors: "UNDEFINED" when the queue's meta is missing (a Redis that lost its data): the
-- client defines the queue again and retries.

local LAYOUT = '4'
local PAD = '-----------------------------------------------------------------'  -- 65 bytes
local RECLAIM = 16
local DROP, HOLD, CLAIM = 0, 1, 2

local function str(x)
  return string.format('%d', x)
end

local function key_of(item)
  local c = string.find(item, ':', 1, true)
  local kl = tonumber(string.sub(item, 1, c - 1))
  return string.sub(item, c + 1, c + kl)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- `command key args...` in chunks of at most 1000 arguments (unpack's stack limit).
local function batched(command, key, args)
  for i = 1, #args, 1000 do
    redis.call(command, key, unpack(args, i, math.min(i + 999, #args)))
  end
end

-- Take up to limit items from the head h, oldest first, into out.  DROP removes them
-- (record, claim count, index entry: a fetch or an eviction) and out gets their records;
-- HOLD and CLAIM keep the records for a settle or an ack and score each seq in the held
-- set with deadline, and out gets seq, record (CLAIM: and the claim count, this one
-- included).  Each item costs one read; the writes of all of them are batched.  Returns
-- the new head and how many were taken; meta (h/t/n/f) is the caller's.
local function take(K, indexed, h, limit, how, out, deadline)
  -- (a table made empty and grown costs more than the commands it saves: only what is used)
  local gone, keys, held, counts, taken = {}, nil, nil, nil, 0
  if indexed then keys = {} end
  if how ~= DROP then held, counts = {}, {} end
  while h and taken < limit do
    local r
    if how == CLAIM then
      r = redis.call('HMGET', K[2], h, 'n' .. h, 'c' .. h)
    else
      r = redis.call('HMGET', K[2], h, 'n' .. h)
    end
    local item, nx = r[1], r[2]
    if nx then
      gone[#gone + 1] = 'n' .. h
      gone[#gone + 1] = 'p' .. nx
    end
    if indexed then keys[#keys + 1] = key_of(item) end
    if how == DROP then
      gone[#gone + 1] = h
      gone[#gone + 1] = 'c' .. h
      out[#out + 1] = item
    else
      held[#held + 1] = deadline
      held[#held + 1] = h
      out[#out + 1] = h
      out[#out + 1] = item
      if how == CLAIM then
        local claims = (tonumber(r[3]) or 0) + 1
        counts[#counts + 1] = 'c' .. h
        counts[#counts + 1] = str(claims)
        out[#out + 1] = claims
      end
    end
    taken = taken + 1
    h = nx
  end
  batched('HDEL', K[2], gone)
  if indexed then batched('HDEL', K[3], keys) end
  if how ~= DROP then
    batched('ZADD', K[4], held)
    batched('HSET', K[2], counts)
  end
  return h, taken
end

-- After items were taken from the head: h the new head (nil: the queue is empty), n the
-- count and f the fetched counter, written in one command where the head stays.
local function set_head(K, h, n, f)
  if h then
    redis.call('HSET', K[1], 'h', h, 'n', str(n), 'f', str(f))
  else
    redis.call('HDEL', K[1], 'h', 't')
    redis.call('HSET', K[1], 'n', str(n), 'f', str(f))
  end
end

-- Evict from the head while the queue (n items) is over its limit.
local function evict(K, indexed, lim, n)
  if lim == 0 or n <= lim then return end
  local m = redis.call('HMGET', K[1], 'h', 'ds')
  local h, gone = take(K, indexed, m[1], n - lim, DROP, {})
  local meta = {'n', str(n - gone), 'ds', str(tonumber(m[2]) + gone)}
  if h then
    meta[5], meta[6] = 'h', h
  else
    redis.call('HDEL', K[1], 'h', 't')
  end
  redis.call('HSET', K[1], unpack(meta))
end

-- Put a held item back at the head (it was the head when taken: it is older than every
-- item queued since).  Its fetch is undone; if its key was queued again meanwhile (addmode
-- 1 or 2), it is dropped by addmode instead, and a full queue evicts it as its oldest.
local function give_back(K, seq, indexed, lim)
  redis.call('ZREM', K[4], seq)
  if indexed then
    local key = key_of(redis.call('HGET', K[2], seq))
    if redis.call('HEXISTS', K[3], key) == 1 then
      redis.call('HDEL', K[2], seq, 'c' .. seq)
      redis.call('HINCRBY', K[1], 'f', '-1')
      redis.call('HINCRBY', K[1], 'dm', '1')
      return
    end
    redis.call('HSET', K[3], key, seq)
  end
  local m = redis.call('HMGET', K[1], 'h', 'n', 'f')
  local h, n = m[1], tonumber(m[2]) + 1
  if h then
    redis.call('HSET', K[2], 'n' .. seq, h, 'p' .. h, seq)
    redis.call('HSET', K[1], 'h', seq, 'n', str(n), 'f', str(tonumber(m[3]) - 1))
  else
    redis.call('HSET', K[1], 'h', seq, 't', seq, 'n', str(n), 'f', str(tonumber(m[3]) - 1))
  end
  evict(K, indexed, lim, n)
end

-- Held items whose deadline passed (their holder died, stalled, failed or let go) go
-- back to the queue, at most `most` per call: O(most + log h).  They are given back
-- newest first, each to the head, so that those coming back together keep their order.
local function reclaim(K, indexed, lim, most)
  if redis.call('ZCARD', K[4]) == 0 then return end
  local due = redis.call('ZRANGEBYSCORE', K[4], '-inf', str(now_ms()), 'LIMIT', '0',
                         str(most))
  table.sort(due, function(x, y) return tonumber(x) > tonumber(y) end)
  for _, seq in ipairs(due) do give_back(K, seq, indexed, lim) end
end

-- mq_define(limit, mode): store the definition, or return the stored one
-- {lim, mode, layout version}.
local function mq_define(K, A)
  local m = redis.call('HMGET', K[1], 'lim', 'mode', 'v')
  if m[1] then return {tonumber(m[1]), tonumber(m[2]), tonumber(m[3] or 1)} end
  redis.call('HSET', K[1], 'lim', A[1], 'mode', A[2], 'v', LAYOUT, 's', '0', 'n', '0',
             'f', '0', 'ds', '0', 'dm', '0', 'ba', '0', 'bf', '0', 'bds', '0', 'bdm', '0',
             'z', PAD)
  redis.call('HSET', K[2], 'z', PAD)
  if A[2] ~= '0' then redis.call('HSET', K[3], '\255', PAD) end
  return {tonumber(A[1]), tonumber(A[2]), tonumber(LAYOUT)}
end

-- Append the record item as seq after the tail t (nil: to an empty queue), the queue
-- then holding n items; h: a new head to write with it (addmode 2 took the old one).
local function append(K, seq, item, t, n, h)
  if t then
    redis.call('HSET', K[2], seq, item, 'n' .. t, seq, 'p' .. seq, t)
    if h then
      redis.call('HSET', K[1], 'h', h, 't', seq, 's', seq, 'n', str(n))
    else
      redis.call('HSET', K[1], 't', seq, 's', seq, 'n', str(n))
    end
  else
    redis.call('HSET', K[2], seq, item)
    redis.call('HSET', K[1], 'h', seq, 't', seq, 's', seq, 'n', str(n))
  end
end

-- mq_add(key, value): queue it by the addmode and size rules; 1.  Addmode 0: three
-- commands (read meta, write the record and its link, write meta); addmode 2 replacing
-- a queued key: eight.  (Lua tables are not used here: making one costs about as much
-- as a command.)
local function mq_add(K, A)
  local m = redis.call('HMGET', K[1], 'mode', 'lim', 't', 's', 'n')
  local mode, t = m[1], m[3]
  if not mode then return redis.error_reply('UNDEFINED') end
  local key = A[1]
  local seq, n = str(tonumber(m[4]) + 1), tonumber(m[5]) + 1
  local item = str(#key) .. ':' .. key .. A[2]
  if mode == '0' then
    append(K, seq, item, t, n)
  else
    local old = redis.call('HGET', K[3], key)
    if not old then
      append(K, seq, item, t, n)
    else
      redis.call('HINCRBY', K[1], 'dm', '1')
      if mode == '1' then return 1 end
      -- addmode 2: the old item leaves the list (its neighbours are linked to each
      -- other) and its record goes; the new one is appended in the same writes
      n = n - 1
      local l = redis.call('HMGET', K[2], 'n' .. old, 'p' .. old)
      local nx, pv = l[1], l[2]
      if pv and nx then  -- from the middle: t stays the tail
        redis.call('HDEL', K[2], old, 'c' .. old, 'n' .. old, 'p' .. old)
        redis.call('HSET', K[2], 'n' .. pv, nx, 'p' .. nx, pv, seq, item, 'n' .. t, seq,
                   'p' .. seq, t)
        redis.call('HSET', K[1], 't', seq, 's', seq, 'n', str(n))
      elseif pv then  -- the tail: pv is the tail the new item follows (n<pv> overwritten)
        redis.call('HDEL', K[2], old, 'c' .. old, 'p' .. old)
        append(K, seq, item, pv, n)
      elseif nx then  -- the head: nx is the head
        redis.call('HDEL', K[2], old, 'c' .. old, 'n' .. old, 'p' .. nx)
        append(K, seq, item, t, n, nx)
      else  -- the only item
        redis.call('HDEL', K[2], old, 'c' .. old)
        append(K, seq, item, nil, n)
      end
    end
    redis.call('HSET', K[3], key, seq)
  end
  if m[2] ~= '0' then evict(K, mode ~= '0', tonumber(m[2]), n) end
  return 1
end

-- mq_fetch(limit): up to limit items from the head, oldest first.  One item: five
-- commands (read meta, the held set's size, the record and its link; delete them; write
-- meta), six with an index.
local function mq_fetch(K, A)
  local m = redis.call('HMGET', K[1], 'mode', 'h', 'n', 'f')
  if not m[1] then return redis.error_reply('UNDEFINED') end
  local indexed = m[1] ~= '0'
  if redis.call('ZCARD', K[4]) > 0 then  -- holds that may have ended: reclaim first
    reclaim(K, indexed, tonumber(redis.call('HGET', K[1], 'lim')), RECLAIM)
    m = redis.call('HMGET', K[1], 'mode', 'h', 'n', 'f')
  end
  local h = m[2]
  if not h then return {} end
  if A[1] == '1' then  -- take's work for one item, without its tables (the common fetch)
    local r = redis.call('HMGET', K[2], h, 'n' .. h)
    local item, nx = r[1], r[2]
    if nx then
      redis.call('HDEL', K[2], h, 'c' .. h, 'n' .. h, 'p' .. nx)
    else
      redis.call('HDEL', K[2], h, 'c' .. h)
    end
    if indexed then redis.call('HDEL', K[3], key_of(item)) end
    set_head(K, nx, tonumber(m[3]) - 1, tonumber(m[4]) + 1)
    return {item}
  end
  local out = {}
  local taken
  h, taken = take(K, indexed, h, tonumber(A[1]), DROP, out)
  if taken == 0 then return out end
  set_head(K, h, tonumber(m[3]) - taken, tonumber(m[4]) + taken)
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
    give_back(K, seq, m[1] ~= '0', tonumber(m[2]))
  end
  return 1
end

-- Take up to limit head items held until deadline_ms (HOLD or CLAIM, see take), after
-- giving back up to most held items whose deadline passed.
local function hold_heads(K, limit, how, lease_ms, most)
  local m = redis.call('HMGET', K[1], 'mode', 'lim')
  if not m[1] then return redis.error_reply('UNDEFINED') end
  local indexed = m[1] ~= '0'
  reclaim(K, indexed, tonumber(m[2]), most)
  m = redis.call('HMGET', K[1], 'h', 'n', 'f')
  local out = {}
  if not m[1] or limit < 1 then return out end
  local h, taken = take(K, indexed, m[1], limit, how, out, str(now_ms() + lease_ms))
  set_head(K, h, tonumber(m[2]) - taken, tonumber(m[3]) + taken)
  return out
end

-- mq_hold(lease_ms, limit): take up to limit head items pending: {seq, item, seq,
-- item...}, oldest first, or {} when empty.  They count as fetched and nobody else sees
-- them; mq_settle (one item) or mq_settle_many commits or gives them back, and a holder
-- that never settles gets them given back once the lease ends.  O(limit log h).
local function mq_hold(K, A)
  return hold_heads(K, tonumber(A[2]), HOLD, tonumber(A[1]), RECLAIM)
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
      give_back(K, seq, m[1] ~= '0', tonumber(m[2]))
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
  local limit = tonumber(A[1])
  return hold_heads(K, limit, CLAIM, tonumber(A[2]), limit + RECLAIM)
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
  local deadline, done = str(now_ms() + tonumber(A[1])), 0
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

-- mq_reset(counter...): move the named counters' baselines (a f ds dm) to their current
-- values.
local function mq_reset(K, A)
  local m = redis.call('HMGET', K[1], 'mode', 'n', 'f', 'ds', 'dm')
  if not m[1] then return redis.error_reply('UNDEFINED') end
  local now = {f = m[3], ds = m[4], dm = m[5],
               a = str(tonumber(m[2]) + tonumber(m[3]) + tonumber(m[4]) + tonumber(m[5]))}
  local base = {}
  for _, c in ipairs(A) do
    base[#base + 1] = 'b' .. c
    base[#base + 1] = now[c]
  end
  batched('HSET', K[1], base)
  return 1
end

-- Flags: what takes items out (and the few words of a hold or a reset) may run when Redis
-- is at maxmemory ('allow-oom'), so that a full Redis can still be drained; an add there
-- is refused before it runs (redis-py's OutOfMemoryError: the engine's ArenaFull).
local function register(name, callback, flags)
  redis.register_function{function_name='mqmi4_' .. name, callback=callback, flags=flags}
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
