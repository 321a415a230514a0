#!lua
-- probe.lua — can this Redis do what tollgated needs? (coordinator/redis.c:
-- at start, on GET /readyz, and once a second while a failure is on.)
-- The shebang line makes Redis check, before anything runs, that it may
-- run a script (ACL +@scripting, EVALSHA not renamed) that writes (no
-- read-only replica, not over maxmemory) and, the two keys hashing to
-- different slots, that it is no Redis Cluster node, which tollgated
-- without cluster mode cannot use (CROSSSLOT, MOVED). It then writes both
-- keys, which also proves neither holds another type (WRONGTYPE).
--
-- KEYS: [1] tg:{probe}:a, [2] tg:{probe-b}:b (the data model in sync.lua's
-- header). ARGV: [1] ttl_ms. Returns 1.
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return 1
