-- Extends every lease the replica still holds, in one call per tick.
-- KEYS: 1 queue
-- ARGV: 1 lease ttl ms, 2 lease key prefix, then pairs: session id, token
-- Returns: one entry per pair: 1 renewed, 0 lost (another owner, or expired and gone).
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[1])
local result = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local lease_key = ARGV[2] .. id
  if redis.call('GET', lease_key) == token then
    redis.call('PEXPIRE', lease_key, ttl)
    redis.call('ZADD', KEYS[1], 'XX', now_ms + ttl, id)
    result[#result + 1] = 1
  else
    result[#result + 1] = 0
  end
end
return result
