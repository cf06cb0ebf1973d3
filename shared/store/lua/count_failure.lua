-- Counts one failed attempt at a session's step in its job, where every replica sees the total (a tracker
-- that crashes is released and may be claimed again elsewhere), and remembers the last cause and when it was.
-- Failures count together only while each comes within the window of the one before: a step that keeps
-- failing does so claim after claim, seconds apart, while a long-lived session's rare, unrelated failures,
-- hours apart, never add up to ending it.
-- Timed by Redis's clock, the one every replica shares (as claim.lua's): was by the caller's, and a replica whose
-- clock was an hour off took the failure another had just counted for one long past and counted from 1 again.
-- KEYS: 1 lease, 2 job
-- ARGV: 1 token, 2 the cause (one line), 3 the window (ms)
-- Returns: the failed attempts so far, this one included; -1 lease lost or no job (nothing counted).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[2], 'lastFailureAt') or '')
if last == nil or now - last > tonumber(ARGV[3]) then redis.call('HSET', KEYS[2], 'failures', 0) end
local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
redis.call('HSET', KEYS[2], 'lastFailure', ARGV[2], 'lastFailureAt', now)
return failures
