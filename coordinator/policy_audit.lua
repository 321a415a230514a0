-- policy_audit.lua — one page of the policy store's audit log
-- (coordinator/store.c, GET /v1/audit). The log: the data model in
-- sync.lua's header ("policy store").
--
-- KEYS: [1] audit. ARGV: [1] before (0: from the newest), [2] limit.
-- Returns up to limit entries older than id before, newest first. Ids are
-- consecutive and newest first, so id X sits at index top - X.
local top = redis.call('LINDEX', KEYS[1], 0)
if not top then return {} end
local before, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local start = 0
if before > 0 then start = cjson.decode(top).id - before + 1 end
if start < 0 then start = 0 end
return redis.call('LRANGE', KEYS[1], start, start + limit - 1)
