-- Counts one failed attempt at a session's step in its job, where every replica sees the total (a tracker
-- that crashes is released and may be claimed again elsewhere), and remembers the last cause.
-- KEYS: 1 lease, 2 job
-- ARGV: 1 token, 2 the cause (one line)
-- Returns: the failed attempts so far, this one included; -1 lease lost or no job (nothing counted).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
redis.call('HSET', KEYS[2], 'lastFailure', ARGV[2])
return failures
