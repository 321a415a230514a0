-- stats.lua — the figures behind GET /v1/stats that every coordinator
-- shares (coordinator/stats.c). Embedded in tollgated, called with EVALSHA
-- (EVAL on NOSCRIPT) through co_redis_eval().
--
-- Keys: all under the hash tag {stats} (one slot: one call may touch them
-- all, and a Redis Cluster keeps them together), described with the rest
-- of the data model in sync.lua's header ("stats") and named by
-- coordinator/redis_keys.c. The minute and top keys are built here from
-- the prefix KEYS[5], so every name still comes from the coordinator.
--
-- KEYS: edges, edgez, ch, chz, prefix ('tg:{stats}:'). ARGV[1] is the
-- operation:
--
-- 'flush': add one coordinator's deltas. ARGV: [2] now_ms, [3] K,
--   [4] seconds n_s, [5] edges n_e, [6] top entries n_t, [7] challenges
--   n_c, then n_s x (sec, allowed, denied, challenged, shadow), n_e x
--   (edge_id, last_ms, row), n_t x (quota, window_ms, window idx, key,
--   estimate), n_c x (id, first_ms, last_ms, issued delta, solved delta,
--   last_edge, key). Returns 1.
--
-- 'read': ARGV: [2] now_ms, [3] from_s, [4] points, [5] edges at most,
--   [6] challenges at most, [7] K, [8] quotas n_q, then n_q x (quota,
--   window_ms, window idx). Returns {decisions: 4 x points integers,
--   oldest second first, allowed/denied/challenged/shadow per second;
--   edges: id, row, ... newest first; challenges: id, row, ... newest
--   first; tops: per quota two lists {key, estimate, ...} highest first,
--   the window idx's then the window idx - 1's (none when idx is 0)}.

local P = KEYS[5]
local EDGE_FORGET_MS, EDGES_KEPT, CH_KEPT = 600000, 4096, 100
local MINUTE_TTL_MS = 17 * 60000
local OUT = {'a', 'd', 'c', 's'}

local function top_key(q, wms, idx)
  return P .. 'top:' .. q .. ':' .. wms .. ':' .. idx
end

-- Drop the lowest-ranked members of zset z beyond keep, and their rows in
-- hash h.
local function trim(z, h, keep)
  local extra = redis.call('ZCARD', z) - keep
  if extra <= 0 then return end
  local gone = redis.call('ZRANGE', z, 0, extra - 1)
  redis.call('HDEL', h, unpack(gone))
  redis.call('ZREMRANGEBYRANK', z, 0, extra - 1)
end

local function flush_edge(id, last, row)
  local old = redis.call('HGET', KEYS[1], id)
  if old and tonumber(string.match(old, '^%d+')) > tonumber(last) then
    return
  end
  redis.call('HSET', KEYS[1], id, row)
  redis.call('ZADD', KEYS[2], last, id)
end

-- Edges silent for EDGE_FORGET_MS (a bounded batch per call; the rest go
-- at the next flush), then the oldest beyond EDGES_KEPT.
local function forget_edges(now)
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf',
    string.format('(%d', now - EDGE_FORGET_MS), 'LIMIT', 0, 1000)
  if #old > 0 then
    redis.call('HDEL', KEYS[1], unpack(old))
    redis.call('ZREM', KEYS[2], unpack(old))
  end
  trim(KEYS[2], KEYS[1], EDGES_KEPT)
end

-- first/last: min/max; counts: sums; last_edge from the newer side that
-- names one (a solve names none); the key from whichever side knows it.
local function flush_challenge(id, first, last, di, ds, edge, key)
  local old = redis.call('HGET', KEYS[3], id)
  local issued, solved = di, ds
  if old then
    local f, l, i, s, e, k =
      string.match(old, '^(%d+) (%d+) (%d+) (%d+) (%S*) (.*)$')
    f, l = tonumber(f), tonumber(l)
    issued, solved = issued + tonumber(i), solved + tonumber(s)
    if f < first then first = f end
    if e ~= '' and (l > last or edge == '') then edge = e end
    last = math.max(l, last)
    if k ~= '' then key = k end
  end
  redis.call('HSET', KEYS[3], id, string.format('%d %d %d %d ', first, last,
    issued, solved) .. edge .. ' ' .. key)
  redis.call('ZADD', KEYS[4], string.format('%d', last), id)
end

local function flush()
  local now, k = tonumber(ARGV[2]), tonumber(ARGV[3])
  local ns, ne, nt, nc = tonumber(ARGV[4]), tonumber(ARGV[5]),
    tonumber(ARGV[6]), tonumber(ARGV[7])
  local a = 8
  for _ = 1, ns do
    local sec = ARGV[a]
    local key = P .. 'd:' .. math.floor(tonumber(sec) / 60)
    for o = 1, 4 do
      local n = ARGV[a + o]
      if n ~= '0' then redis.call('HINCRBY', key, sec .. ':' .. OUT[o], n) end
    end
    redis.call('PEXPIRE', key, MINUTE_TTL_MS)
    a = a + 5
  end
  for _ = 1, ne do
    flush_edge(ARGV[a], ARGV[a + 1], ARGV[a + 2])
    a = a + 3
  end
  forget_edges(now)
  for _ = 1, nt do
    local wms, idx = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local ttl = (idx + 2) * wms - now
    if ttl > 0 then
      local z = top_key(ARGV[a], ARGV[a + 1], ARGV[a + 2])
      redis.call('ZADD', z, 'GT', ARGV[a + 4], ARGV[a + 3])
      redis.call('ZREMRANGEBYRANK', z, 0, -(k + 1))
      redis.call('PEXPIRE', z, ttl)
    end
    a = a + 5
  end
  for _ = 1, nc do
    flush_challenge(ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
      tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), ARGV[a + 5], ARGV[a + 6])
    a = a + 7
  end
  trim(KEYS[4], KEYS[3], CH_KEPT)
  return 1
end

-- ids of zset z (newest first, at most max, scores above min) with their
-- rows in hash h, flat.
local function rows(z, h, min, max)
  local ids = redis.call('ZREVRANGEBYSCORE', z, '+inf', min, 'LIMIT', 0, max)
  local out = {}
  if #ids == 0 then return out end
  local vals = redis.call('HMGET', h, unpack(ids))
  for i, id in ipairs(ids) do
    out[#out + 1] = id
    out[#out + 1] = vals[i] or ''
  end
  return out
end

local function read()
  local now, from, points = tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4])
  local k, nq = tonumber(ARGV[7]), tonumber(ARGV[8])
  local dec = {}
  for i = 1, 4 * points do dec[i] = 0 end
  for m = math.floor(from / 60), math.floor((from + points - 1) / 60) do
    local all = redis.call('HGETALL', P .. 'd:' .. m)
    for i = 1, #all, 2 do
      local sec, o = string.match(all[i], '^(%d+):(%a)$')
      local at = sec and tonumber(sec) - from
      if at and at >= 0 and at < points then
        for j = 1, 4 do
          if OUT[j] == o then dec[4 * at + j] = tonumber(all[i + 1]) end
        end
      end
    end
  end
  local tops = {}
  for i = 0, nq - 1 do
    local b = 9 + 3 * i
    local idx = tonumber(ARGV[b + 2])
    tops[#tops + 1] = redis.call('ZREVRANGE',
      top_key(ARGV[b], ARGV[b + 1], ARGV[b + 2]), 0, k - 1, 'WITHSCORES')
    tops[#tops + 1] = idx > 0 and redis.call('ZREVRANGE',
      top_key(ARGV[b], ARGV[b + 1], string.format('%d', idx - 1)), 0, k - 1,
      'WITHSCORES') or {}
  end
  return {dec,
    rows(KEYS[2], KEYS[1], string.format('(%d', now - EDGE_FORGET_MS),
      tonumber(ARGV[5])),
    rows(KEYS[4], KEYS[3], '-inf', tonumber(ARGV[6])),
    tops}
end

if ARGV[1] == 'flush' then return flush() end
if ARGV[1] == 'read' then return read() end
return redis.error_reply('stats.lua: unknown operation')
