-- sync.lua — apply one edge's batch of counts atomically and decide every
-- (quota, key) in it. Embedded in tollgated, called with EVALSHA.
--
-- Data model, per (quota, key), hash tag {q|k} (percent-encoded, see
-- co_key_tag in redis.c):
--   tg:{q|k}:c  HASH  w  current window index = floor(now_ms / window_ms)
--                     a  admitted in the current window
--                     t  attempts (admitted + denied + challenged) in it
--                     pa, pt  the same for the previous window
--   tg:{q|k}:e  ZSET  edge_id -> last report time (ms)
-- Both expire after 2 x window: an idle key costs nothing.
--
-- KEYS: 2 per item, c then e.
-- ARGV: [1] now_ms (the coordinator's co_wall_ms()), [2] edge_id,
--   [3] item count n, then 6 per item:
--   limit, window_ms, over_action (1 challenge, 2 deny),
--   deny_after_milli (deny_after x 1000, 0 = off), admitted, attempts.
-- Returns a flat array, 4 integers per item:
--   action (0 allow, 1 challenge, 2 deny), lease, reset_ms, estimate.
--
-- Time is the coordinator's wall clock, passed in ARGV, not Redis TIME: the
-- accuracy simulator replaces co_wall_ms() with a simulated clock and unit
-- tests pin it. Coordinators must therefore keep NTP-synchronised clocks;
-- their skew shifts window boundaries by as much.
-- The count is Cloudflare's two-window approximation of a sliding window:
--   estimate = pa * (window - elapsed) / window + a
-- The lease splits what is left of the limit evenly between the edges that
-- reported the key within the last window, rounded down, so the leases
-- outstanding never add up to more than what is left. A key is over its
-- quota when its estimate reaches the limit, or when what is left is too
-- little to lease any edge a request and the attempts reached the limit.
-- Leases proportional to each edge's demand come later.
-- Redis truncates Lua numbers in replies to integers, so every value is
-- rounded explicitly, and numbers sent to redis.call are formatted as
-- integers (never 1.7e+12).

local function int(x)
  return string.format('%d', x)
end

local now = tonumber(ARGV[1])
local edge = ARGV[2]
local n = tonumber(ARGV[3])
local out = {}

for i = 1, n do
  local kc, ke = KEYS[2 * i - 1], KEYS[2 * i]
  local b = 3 + (i - 1) * 6
  local limit = tonumber(ARGV[b + 1])
  local window = tonumber(ARGV[b + 2])
  local over = tonumber(ARGV[b + 3])
  local deny_milli = tonumber(ARGV[b + 4])
  local admitted = tonumber(ARGV[b + 5])
  local attempts = tonumber(ARGV[b + 6])

  local idx = math.floor(now / window)
  local h = redis.call('HMGET', kc, 'w', 'a', 't', 'pa', 'pt')
  local w = tonumber(h[1])
  local a = tonumber(h[2]) or 0
  local t = tonumber(h[3]) or 0
  local pa = tonumber(h[4]) or 0
  local pt = tonumber(h[5]) or 0

  if w == nil or w < idx - 1 then
    a, t, pa, pt = 0, 0, 0, 0
  elseif w == idx - 1 then
    pa, pt, a, t = a, t, 0, 0
  end
  -- w == idx: same window. w > idx only if a clock stepped back: keep
  -- counting into the stored window rather than dropping counts.
  a = a + admitted
  t = t + attempts
  redis.call('HSET', kc, 'w', int(idx), 'a', int(a), 't', int(t),
             'pa', int(pa), 'pt', int(pt))
  redis.call('PEXPIRE', kc, int(2 * window))

  local remaining_ms = (idx + 1) * window - now
  if remaining_ms < 0 then remaining_ms = 0 end
  if remaining_ms > window then remaining_ms = window end
  local est = math.floor(pa * remaining_ms / window) + a
  local est_t = math.floor(pt * remaining_ms / window) + t

  local action = 0
  if deny_milli > 0 and est_t * 1000 >= deny_milli * limit then
    action = 2
  elseif est >= limit then
    action = over
  end

  redis.call('ZADD', ke, int(now), edge)
  redis.call('ZREMRANGEBYSCORE', ke, '-inf', int(now - window - 1))
  local edges = redis.call('ZCARD', ke)
  redis.call('PEXPIRE', ke, int(2 * window))

  local lease = 0
  if action == 0 and est < limit then
    lease = math.floor((limit - est) / edges)
    -- Less budget left than edges to split it between: nobody can be
    -- leased a single request, so a client that has asked for at least its
    -- limit is over its quota now, not when a lease that cannot be granted
    -- would have brought it there.
    if lease == 0 and est_t >= limit then
      action = over
    end
  end

  out[#out + 1] = action
  out[#out + 1] = lease
  out[#out + 1] = remaining_ms
  out[#out + 1] = est
end

return out
