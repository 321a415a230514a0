#!lua
-- policy_write.lua — every write of the policy store (coordinator/store.c)
-- as ONE atomic call: check the version the writer based its change on
-- (If-Match), write version n+1, move current, add its meta and one audit
-- entry. A stale expectation changes nothing. Keys and values: the data
-- model in sync.lua's header ("policy store"). A key reset is one call
-- too: its audit entry and the DEL of the key's counters, or neither.
-- The shebang line makes Redis refuse the whole call before it runs when
-- it cannot write (over maxmemory with noeviction, a read-only replica),
-- so no write stops half-way and no write lands without its entry.
--
-- KEYS: [1] current, [2] seq, [3] meta, [4] audit, [5] audit_seq, [6] the
--   prefix of the version keys (version n lives at KEYS[6] .. n; same
--   hash tag, so the version keys hash to the slot of the others);
--   reset: [7], [8] the key's counters (tg:{q|k}:c and :e), deleted.
-- ARGV: [1] op (seed | put | rollback | audit | reset), [2] expected current
--   version (-1: any), [3] now_ms, [4] who, [5] action, [6] body (a
--   canonical document without "version"; for rollback the version to
--   copy), [7] detail (JSON text), [8] audit entries kept.
-- Returns {status, version, doc}: 0 written (version and document of the
--   new version; audit, reset: current, ""), 1 stale (the current version), 2
--   rollback source missing, 3 seed found a current version (that one).
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local op, expect, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local who, action = cjson.encode(ARGV[4]), cjson.encode(ARGV[5])
local detail = ARGV[7]
if op == 'seed' then
  if cur > 0 then return {3, cur, ''} end
elseif expect >= 0 and expect ~= cur then
  return {1, cur, ''}
end
local function audit(from, to)
  local id = redis.call('INCR', KEYS[5])
  redis.call('LPUSH', KEYS[4], '{"id":' .. id .. ',"at":' .. now ..
    ',"who":' .. who .. ',"action":' .. action ..
    ',"from_version":' .. from .. ',"to_version":' .. to ..
    ',"detail":' .. detail .. '}')
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[8]) - 1)
end
if op == 'audit' then audit(cur, cur) return {0, cur, ''} end
if op == 'reset' then
  audit(cur, cur)
  redis.call('DEL', KEYS[7], KEYS[8])
  return {0, cur, ''}
end
local body, from = ARGV[6], cur
if op == 'rollback' then
  from = tonumber(body)
  local old = redis.call('GET', KEYS[6] .. from)
  if not old then return {2, cur, ''} end
  body = '{' .. string.sub(old, string.find(old, ',', 1, true) + 1)
end
local n = redis.call('INCR', KEYS[2])
if n <= cur then n = cur + 1 redis.call('SET', KEYS[2], n) end
local doc = '{"version":' .. n .. ',' .. string.sub(body, 2)
redis.call('SET', KEYS[6] .. n, doc)
redis.call('SET', KEYS[1], n)
redis.call('HSET', KEYS[3], n, '{"version":' .. n ..
  ',"created_at":' .. now .. ',"by":' .. who .. ',"action":' ..
  action .. ',"from":' .. from .. '}')
audit(cur, n)
return {0, n, doc}
