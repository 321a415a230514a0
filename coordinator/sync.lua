-- sync.lua — apply one edge's batch of counts atomically, grant leases and
-- decide every (quota, key) in it. Embedded in tollgated, called with
-- EVALSHA; a batch over 512 items is split into several calls sent in one
-- pipeline (each call is atomic, the batch as a whole is not).
--
-- The Redis data model of tollgated, all of it, is written here once;
-- coordinator/redis_keys.c builds every name below (nowhere else spells
-- one), and every other script and file points here. Each name is "tg:",
-- a hash tag in braces, and a suffix; the keys one script call touches
-- share a tag, so a Redis Cluster can route the call by slot. Parts a
-- client chooses are percent-encoded outside [A-Za-z0-9._:-]
-- (co_percent_encode), so '{', '}', '|' and '%' never appear raw.
--
-- Rate-limit counters (this script), per (quota, key), hash tag {q|k}:
--   tg:{q|k}:c  HASH  w       current window index = floor(now_ms / window_ms)
--                     a, t    admitted / attempts (admitted + denied +
--                             challenged) in the current window
--                     pa, pt  the same for the previous window
--                     L       sum of the leases outstanding (granted to an
--                             edge and not yet superseded by its next report)
--                     D       sum of the edges' demand rates (milli-req/s)
--                     e:<edge_id>  the edge's record, 9 integers:
--                       "seq lease rate last_ms action reset_ms count carry
--                        digest"
--                       seq       the SyncRequest seq that wrote it
--                       lease     what it was granted then (part of L)
--                       rate      its smoothed demand, milli-req/s (part of D)
--                       last_ms   when it reported the key
--                       action, reset_ms, count  the rest of its answer
--                       carry     rounding remainder of its shares, 1/1000
--                       digest    of that seq's whole batch (ARGV, last);
--                                 absent in records written before it
--   tg:{q|k}:e  ZSET  edge_id -> last report time (ms), to expire edges
-- Both expire after 2 x window: an idle key costs nothing. The admin API
-- reads them (GET /v1/keys/{quota}/{key}) and deletes them (DELETE).
-- Per edge (hash tag {edge|<edge_id>}):
--   tg:{edge|<id>}:sig:<32 hex>  STRING  the nonce of the request that
--                     first used this signature; lives replay_ttl_ms
--
-- Challenges (coordinator/challenge_verify.c, plain SETs):
--   tg:{nonce|<32 hex>}  STRING  "1": this challenge token's nonce is
--                     burnt (SET NX); lives until the token expires plus
--                     a margin for clocks that disagree
--   tg:{clr|<quota>|<32 hex key hash>}  STRING  unix s the clearance runs
--                     to; lives as long as the clearance (key inspect)
--
-- Policy store (coordinator/store.c, policy_write.lua, policy_audit.lua),
-- one hash tag {policy}, so one slot:
--   tg:{policy}:v:<n>      STRING  canonical JSON of version n, immutable,
--                                  starting {"version":<n>,...
--   tg:{policy}:current    STRING  n, the version coordinators enforce
--   tg:{policy}:seq        counter of versions
--   tg:{policy}:meta       HASH    n -> {"version","created_at" (unix ms),
--                                  "by","action","from"}; "from" is the
--                                  version copied by a rollback, else the
--                                  version the write replaced (0: none)
--   tg:{policy}:audit      LIST    {"id","at","who","action",
--                                  "from_version","to_version","detail"},
--                                  newest first, the newest 100000 kept
--   tg:{policy}:audit_seq  counter of audit ids (consecutive, so an id's
--                                  place in the list is computable)
--
-- Stats (coordinator/stats.c, stats.lua), one hash tag {stats}:
--   tg:{stats}:d:<minute>   HASH  "<unix s>:<a|d|c|s>" -> decisions of that
--                                 second (allowed, denied, challenged,
--                                 shadow); minute = floor(s / 60); expires
--                                 17 min after its last write
--   tg:{stats}:edges        HASH  edge_id -> "last_ms lag_ms policy_version
--                                 degraded module_version[ refused_version
--                                 refused_reason]", the edge's last sync at
--                                 any coordinator (the newest wins); the
--                                 last two only while the edge reports a
--                                 policy it could not install
--   tg:{stats}:edgez        ZSET  edge_id -> last_ms; edges silent for 10
--                                 min are removed, at most 4096 are kept
--   tg:{stats}:top:<quota>:<window_ms>:<window idx>
--                           ZSET  key -> the largest sliding-window estimate
--                                 a sync answered in that window; the top K
--                                 kept; expires a window after its own
--                                 window ends (a read carries the previous
--                                 window's keys, decayed, over the turn).
--                                 <quota> is percent-encoded
--   tg:{stats}:ch           HASH  "<key hash hex>:<quota>" -> "first_ms
--                                 last_ms issued solved last_edge key"
--                                 (key: the rest of the value, any bytes;
--                                 "" until an issuing coordinator names it)
--   tg:{stats}:chz          ZSET  the same ids -> last_ms; the newest 100
--                                 kept
--
-- Readiness probe (coordinator/redis.c, probe.lua), two tags on purpose:
--   tg:{probe}:a, tg:{probe-b}:b  STRING  "1", lives 2 s; written by the
--                                 probe to show Redis takes scripted writes
--
-- KEYS: [1] the replay key, then 2 per item: c, e.
-- ARGV: [1] now_ms (the coordinator's wall clock), [2] edge_id, [3] seq,
--   [4] sync_interval_ms, [5] nonce (unique per HTTP request, the same in
--   every call of one batch), [6] replay_ttl_ms, [7] item count n, then 7 per
--   item: limit, window_ms, over_action (1 challenge, 2 deny),
--   deny_after_milli (deny_after x 1000, 0 = off), admitted, attempts,
--   burst (the most one edge may hold of the key at once, 0 = no cap);
--   last, ARGV[8 + 7n]: the batch digest (sync.c's batch_digest(), < 2^53,
--   the same in every call of one batch).
--   limit is the key's own: a per-key override's when the policy has one
--   for it, else the quota's (co_quota_limit). Everything below that says
--   "limit" means that one, so an override moves the key's decisions, its
--   deny_after threshold (a multiple of it) and its leases, and no other
--   key's. The edge never sees overrides: its RateLimit-Policy header
--   shows the quota's limit even for an overridden key, and its floor
--   (bound (a) below) comes from the quota too.
-- Returns 3 + 4n integers: status (0 applied, 1 replayed, 2 conflict, 3
--   the seq was applied with another batch),
--   the stored seq and the 1-based item of a conflict (applied: 0 and the
--   number of items answered as retries, see below; for /metrics); then per
--   item action (0 allow, 1 challenge, 2 deny), lease, reset_ms, count
--   (zeros unless applied).
--
-- Time is the coordinator's wall clock, passed in ARGV, not Redis TIME: the
-- accuracy simulator replaces co_wall_ms() with a simulated clock and unit
-- tests pin it. Coordinators must therefore keep NTP-synchronised clocks;
-- their skew shifts window boundaries by as much.
--
-- Replays: a signature is accepted once. Every call of a batch checks the
-- replay key: absent or holding this request's nonce means go on (later
-- calls of the same batch find the nonce the first one wrote); anything
-- else is a replay, answered before anything is written.
--
-- Idempotency on (edge_id, seq), per item: a record whose seq equals the
-- request's is a retry of a batch already applied (the answer was lost):
-- nothing is added and the stored answer comes back unchanged. A record
-- with a larger seq means this request is older than one already applied:
-- the whole call changes nothing and answers conflict; so does a record
-- of the same seq whose batch digest differs (status 3: the same seq with
-- other counts is no retry, and answering it from the record would drop
-- its counts silently).
--
-- Integers are exact: seq is at most 2^53 - 1 (sync.c refuses larger ones
-- with 400), each count at most 1e12 and a limit at most 1e12 (policy.c),
-- and the sums a key accumulates (a, t, pa, pt, D, a rate) saturate at
-- NMAX = 2^53 - 1, far above any limit, so no double rounds an integer
-- and none formats past int64 (which would wrap it negative).
--
-- The count is Cloudflare's two-window approximation of a sliding window:
--   est = ceil(pa * (window - elapsed) / window) + a
-- (rounded up: it is a bound). A key is over its quota (action =
-- over_action) when est >= limit; DENY when the attempts estimate reaches
-- deny_after x limit; and over as well when the lease rounds to 0 while the
-- attempts estimate has reached the limit (nothing can be leased, the client
-- asked for at least its limit). reset_ms is the time left in the window.
--
-- Leases follow demand. When edge e reports (A admitted, T attempts):
--   1. e's previous lease leaves L: its new report supersedes it (the edge
--      replaces its whole allowance with the new lease; what it admitted out
--      of the old one is in A).
--   2. A and T are added to the window counts.
--   3. e's demand rate r_e (attempts/s since its previous report, EWMA with
--      a time constant of one sync interval; first report: T over one sync
--      interval) replaces its old rate in D.
--   4. left = max(0, limit - est), avail = max(0, left - L)
--      lease = min(avail, cap, burst, round(left * r_e / D))
--      (burst only when > 0)
--      The share is of what is left of the limit, not of what the other
--      edges' leases leave over: with every edge at its share the shares
--      add up to left and each fits in avail, so the leases follow demand
--      (3x the demand, 3x the lease) and can use the whole budget; a share
--      that does not fit (others took more while demand shifted) is cut to
--      avail.
--      cap = max(1, slack, ceil(2 * r_e * sync_interval)): what the edge
--      plausibly needs before its next sync, twice over, so one edge cannot
--      hoard the budget a quieter edge will want a second later.
--      slack = min(8, floor(left / (4 * reach))): while there is plenty
--      of headroom a lease may be a few requests more than the demand
--      calls for. Without it a sparse key (a fraction of a request per
--      edge per interval) is leased 1, every admission empties the bucket
--      and pulls the edge's next sync forward: 1,000 clients at half their
--      limit of 600/min over 20 edges cost 20 syncs per edge per second and
--      80 Redis round trips per 1,000 decisions in the simulator; with the
--      slack, 2.9 and 11.7 (at 6000/min: 5.0 -> 1.9 syncs, 9.96 -> 3.83
--      round trips). Near the limit or over many edges the slack is 0.
--      reach is how many edges the key will reach, not how many have reported
--      it so far (reach() and reach_slack() below): n edges reported it
--      within a window, its attempts estimate is N, and N attempts thrown
--      uniformly at reach edges land on n distinct ones on average; while no
--      attempt has met an edge that already had the key (N <= n), reach is
--      unbounded and the slack 0. Dividing by n alone held only once every
--      edge had reported: a key spread thin over many edges grows its n for a
--      whole window, so its first edges, finding n small, took 8 each (about
--      250 of 600 for a client at half its limit over 280 edges), pinned it
--      for a minute (they see the key once a minute), and the edges reached
--      later found avail 0 and refused the client's next request there (95.3%
--      admitted, 89.8% in the window after the first). With reach: 100%. A
--      key the edges see steadily (fleet20: 20 edges, each seeing it every
--      few seconds) has N >> n within seconds, reach = n, and the slack it
--      had.
--      The rounding diffuses
--      its error: the remainder is carried to e's next share of this key, so
--      an edge whose share is 0.3 gets 1 every third sync instead of never.
--      Minimum 1: while the key's attempts estimate is under the limit (its
--      demand fits) and avail >= 1, a share that comes out 0 is raised to
--      1 (the carry then restarts at 0). A key spread thin, e.g. a client
--      at half its limit of 600/min over 280 edges, reaches each edge about
--      once a minute: every edge's share is under 1, most syncs found it 0,
--      and the next arrival met an empty bucket (80% of such a client's
--      requests admitted in the simulator, 66% in its third window; with
--      the minimum, 99.5-100%). The 1 still comes out of avail, so the
--      bound below is untouched. Not for a key whose attempts reached the
--      limit (an attacker spraying many edges): there the 1s would fill L
--      sooner and leave no slack for the floor admissions (a) still
--      arriving, which measurably raised the cold window's overshoot.
--      burst, when the quota sets it (> 0), is the operator's own cap:
--      however much demand an edge reports, it holds at most burst of the
--      key at once, so one edge cannot take a large share of a key's
--      budget in one grant. It applies last (after the minimum 1, which it
--      cannot undo: burst >= 1) and, like cap, what it cuts is not carried.
--   5. L += lease.
-- Edges silent for the key longer than one window are expired: their lease
-- leaves L, their rate leaves D. One window, not a few sync intervals,
-- because that is how long the edge itself holds on to a lease it does not
-- renew (edge-module bucket.c): forgetting it sooner would hand the same
-- budget out twice. The cap keeps what a departed edge pins small.
--
-- THE OVERSHOOT BOUND. Every grant is at most avail = limit - est - L at
-- the moment it is made (burst only lowers a grant; the minimum 1 needs
-- avail >= 1), and then joins L; a lease only leaves L when the edge's
-- next report moves what it admitted out of it into est (or after a
-- window, when the edge has stopped using it). So at all times
--   est + L <= limit
-- for the key's own limit (an override's or the quota's) while it stays
-- the same; one lowered mid-window, by a new policy, can leave leases
-- granted under the old one outstanding until each edge's next report
-- supersedes them,
-- and since an edge admits through the coordinator only out of its lease,
--   coordinated admissions in a window <= limit.
-- What the sum can exceed the limit by is only what edges admit on their
-- own, outside any lease:
--   (a) the floor: a key an edge has not been leased yet (a new key, or one
--       whose lease is older than a window) gets the quota's floor, even
--       when the key's override is lower (the edge knows no overrides);
--   (b) the stale allowance: an edge whose syncs fail grants, on its own,
--       a decaying allowance starting from its last lease, down to the
--       floor (degraded answers lease nothing: the same fallback);
--   (c) clock skew between coordinators (window boundaries move by it) and
--       the two-window approximation itself: est assumes the previous
--       window's admissions were uniform; for the current fixed window
--       a <= est holds exactly.
-- Both (a) and (b) are counted as soon as they are reported, so they shift
-- budget away from later grants instead of accumulating.
-- In numbers, for a key reached by E edges, floor f (limit / expected
-- edges unless the quota sets it) and a fixed window W: every admission in
-- W is either out of a lease, and then in a (reported) or still inside
-- some edge's outstanding lease (unreported: a lease leaves L only when
-- the report that moves its admissions into a arrives), or on the edge's
-- own. So at the last grant g of W, what W admits is at most
--   a(g) + L(g) + O(W) <= est(g) + L(g) + O(W) <= limit + O(W),
-- O(W) the own admissions of W, at most f per edge per window of its own
-- (c aside): O(W) <= E * f in the worst case, where every edge meets the
-- key fresh in W; any own admission reported before g has already cut the
-- grants after it, and an edge holding an over-limit action grants no
-- floor (bucket.c), so the simulator measures little of E * f (bench/sim,
-- spray280 at 600/min: at most 1 request over the limit in a window).
-- How a grant inside avail is sized does not enter the
-- bound: the demand share, the cap, the slack, the carry and the minimum
-- 1 only choose a value in [0, avail]. In particular the reach rule of
-- 4. only ever lowers the slack (reach >= n, so the slack is at most what
-- left / (4n) gave), and the floor path (a) is untouched, so it keeps
-- this bound exactly; what it changes is where the budget under the
-- limit sits: the slack of all the key's edges together is at most about
-- E * left / (4 * reach) ~ left / 4 once reach ~ E, instead of growing
-- with every edge that joins, which leaves avail for the minimum 1 of the
-- edges a sparse key reaches next. The bound, not the measured figure:
-- budget the old slack pinned and left unused now goes to demand, so
-- where E * f nears the limit, a cold window shows more of O(W) (bench/sim
-- spray280 --edges 500 at 600/min, floor 1: 13% -> 24% over; within the
-- 280 edges the design targets, 0.17%).
--
-- Redis truncates Lua numbers in replies to integers, so every value is
-- rounded explicitly, and numbers sent to redis.call are formatted as
-- integers (never 1.7e+12).

local MIN_RATE = 50   -- milli-req/s: an idle edge still gets a 1-request cap
local NMAX = 9007199254740991  -- 2^53 - 1: sums saturate here (see above)
local SLACK_CAP = 8  -- the most the headroom rule adds to a cap (see 4.)

local function int(x)
  return string.format('%d', x)
end

-- How many edges a key spread uniformly will reach, from n, the edges
-- that reported it within a window, and N, its attempts estimate over the
-- same span (see 4.): the E for which N attempts thrown uniformly at E
-- edges are expected to land on n distinct ones, n = E * (1 - exp(-N/E)).
-- With x = N/E that is (1 - exp(-x)) / x = n/N, decreasing in x, solved by
-- bisection. No attempt has yet met an edge that already had the key
-- (n >= N): nothing bounds the reach, math.huge. Never below n.
local function reach(N, n)
  if n >= N then return math.huge end
  local rho = n / N
  local lo, hi = 0, 1 / rho   -- f(lo) > rho > f(hi)
  for _ = 1, 24 do
    local x = (lo + hi) / 2
    if (1 - math.exp(-x)) / x > rho then lo = x else hi = x end
  end
  return math.max(n, N / hi)
end

-- The slack s (at most left / (4n)) cut to left / (4 * reach(N, n)). The
-- common case, a key seen steadily, keeps all of s: reach <= left / (4s)
-- exactly when x = 4sN / left has (1 - exp(-x)) / x >= n/N (the same
-- decreasing function), one exp instead of the bisection.
local function reach_slack(left, N, n, s)
  if n >= N then return 0 end
  local x = 4 * s * N / left
  if (1 - math.exp(-x)) / x >= n / N then return s end
  return math.min(s, math.floor(left / (4 * reach(N, n))))
end

-- An edge's record, or nil.
local function record(s)
  if not s then return nil end
  local f = {}
  for v in string.gmatch(s, '%-?%d+') do f[#f + 1] = tonumber(v) end
  if #f < 8 then return nil end
  return {seq = f[1], lease = f[2], rate = f[3], last = f[4], action = f[5],
          reset = f[6], count = f[7], carry = f[8], digest = f[9]}
end

local now = tonumber(ARGV[1])
local edge = ARGV[2]
local seq = tonumber(ARGV[3])
local interval = math.max(tonumber(ARGV[4]), 100)
local nonce = ARGV[5]
local replay_ttl = tonumber(ARGV[6])
local n = tonumber(ARGV[7])
local digest = ARGV[8 + 7 * n]
local field = 'e:' .. edge
local out = {0, 0, 0}

local function refuse(status, a, b)
  local r = {status, a, b}
  for _ = 1, 4 * n do r[#r + 1] = 0 end
  return r
end

local used = redis.call('GET', KEYS[1])
if used and used ~= nonce then
  return refuse(1, 0, 0)
end

-- Read everything first: a conflict must leave Redis untouched.
local state = {}
for i = 1, n do
  local h = redis.call('HMGET', KEYS[2 * i], 'w', 'a', 't', 'pa', 'pt', 'L',
                       'D', field)
  local prev = record(h[8])
  if prev and prev.seq > seq then
    return refuse(2, prev.seq, i)
  end
  if prev and prev.seq == seq and prev.digest and
     prev.digest ~= tonumber(digest) then
    return refuse(3, prev.seq, i)
  end
  state[i] = {h = h, prev = prev}
end
redis.call('SET', KEYS[1], nonce, 'PX', int(replay_ttl))

for i = 1, n do
  local kc, ke = KEYS[2 * i], KEYS[2 * i + 1]
  local h, prev = state[i].h, state[i].prev
  local b = 7 + (i - 1) * 7
  local limit = tonumber(ARGV[b + 1])
  local window = tonumber(ARGV[b + 2])
  local over = tonumber(ARGV[b + 3])
  local deny_milli = tonumber(ARGV[b + 4])
  local admitted = tonumber(ARGV[b + 5])
  local attempts = tonumber(ARGV[b + 6])
  local burst = tonumber(ARGV[b + 7])

  if prev and prev.seq == seq then
    -- A retry: the same answer, nothing added.
    out[3] = out[3] + 1
    out[#out + 1] = prev.action
    out[#out + 1] = prev.lease
    out[#out + 1] = prev.reset
    out[#out + 1] = prev.count
  else
    local idx = math.floor(now / window)
    local w = tonumber(h[1])
    local a = tonumber(h[2]) or 0
    local t = tonumber(h[3]) or 0
    local pa = tonumber(h[4]) or 0
    local pt = tonumber(h[5]) or 0
    local L = tonumber(h[6]) or 0
    local D = tonumber(h[7]) or 0

    if w == nil or w < idx - 1 then
      a, t, pa, pt = 0, 0, 0, 0
    elseif w == idx - 1 then
      pa, pt, a, t = a, t, 0, 0
    else
      -- w == idx: same window. w > idx only if a clock stepped back (or
      -- coordinators disagree): keep counting into the stored window
      -- rather than dropping counts.
      idx = w
    end
    a = math.min(a + admitted, NMAX)
    t = math.min(t + attempts, NMAX)

    -- Expire edges silent for more than a window (this one included: it
    -- then starts over as a first report).
    local cutoff = '(' .. int(now - window)
    local gone = redis.call('ZRANGEBYSCORE', ke, '-inf', cutoff)
    for _, g in ipairs(gone) do
      local r = record(redis.call('HGET', kc, 'e:' .. g))
      if r then
        L = L - r.lease
        D = D - r.rate
      end
      redis.call('HDEL', kc, 'e:' .. g)
      if g == edge then prev = nil end
    end
    if #gone > 0 then
      redis.call('ZREMRANGEBYSCORE', ke, '-inf', cutoff)
    end

    -- The new report supersedes the previous lease and rate.
    local rate
    if prev then
      L = L - prev.lease
      D = D - prev.rate
      local dt = math.max(now - prev.last, 1)
      local inst = attempts * 1000000 / dt
      rate = prev.rate + (inst - prev.rate) * dt / (dt + interval)
    else
      rate = attempts * 1000000 / interval
    end
    rate = math.min(math.max(math.floor(rate + 0.5), MIN_RATE), NMAX)
    if L < 0 then L = 0 end   -- never: records and sums change together
    if D < 0 then D = 0 end
    D = math.min(D + rate, NMAX)

    local remaining_ms = (idx + 1) * window - now
    if remaining_ms < 0 then remaining_ms = 0 end
    if remaining_ms > window then remaining_ms = window end
    local est = math.ceil(pa * remaining_ms / window) + a
    local est_t = math.ceil(pt * remaining_ms / window) + t

    local action = 0
    if deny_milli > 0 and est_t * 1000 >= deny_milli * limit then
      action = 2
    elseif est >= limit then
      action = over
    end

    local lease = 0
    local carry = prev and prev.carry or 0
    if action == 0 then
      local left = math.max(limit - est, 0)
      local avail = math.max(left - L, 0)
      -- Headroom: while a quarter of what is left would still cover every
      -- edge the key reaches holding this much, a lease may be a few
      -- requests more than the demand calls for (at most SLACK_CAP). A
      -- sparse key (a fraction of a request per edge per interval) then
      -- does not empty its bucket at every admission and pull the edge's
      -- next sync forward; near the limit, or over many edges, it changes
      -- nothing. reach only when the slack would matter (it is 0 or
      -- within the demand cap otherwise).
      local edges = redis.call('ZCARD', ke) + (prev and 0 or 1)
      local need = math.ceil(2 * rate * interval / 1000000)
      local slack = math.min(SLACK_CAP, math.floor(left / (4 * edges)))
      if slack > need then
        slack = reach_slack(left, est_t, edges, slack)
      end
      local cap = math.max(1, slack, need)
      local x = left * rate / D + carry / 1000
      lease = math.min(math.floor(x), cap, avail)
      -- Only the rounding error is carried, not what cap or avail cut.
      carry = math.floor((x - math.floor(x)) * 1000)
      -- A sparse key whose demand fits its limit: at least 1 (see 4.).
      if lease == 0 and avail >= 1 and est_t < limit then
        lease = 1
        carry = 0
      end
      -- burst >= 1 when set, so it never turns a lease into 0.
      if burst > 0 and lease > burst then
        lease = burst
      end
      if lease == 0 and est_t >= limit then
        action = over
      end
    end
    L = L + lease

    redis.call('HSET', kc, 'w', int(idx), 'a', int(a), 't', int(t),
               'pa', int(pa), 'pt', int(pt), 'L', int(L), 'D', int(D),
               field, string.format('%d %d %d %d %d %d %d %d %s', seq,
                                    lease, rate, now, action, remaining_ms,
                                    est, carry, digest))
    redis.call('PEXPIRE', kc, int(2 * window))
    redis.call('ZADD', ke, int(now), edge)
    redis.call('PEXPIRE', ke, int(2 * window))

    out[#out + 1] = action
    out[#out + 1] = lease
    out[#out + 1] = remaining_ms
    out[#out + 1] = est
  end
end

return out
