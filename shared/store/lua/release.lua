-- Gives leases back so another replica can claim the sessions at once (graceful shutdown).
-- KEYS: 1 queue
-- ARGV: 1 lease key prefix, then pairs: session id, token
-- Returns: how many leases were released.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local released = 0
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local lease_key = ARGV[1] .. id
  if redis.call('GET', lease_key) == token then
    redis.call('DEL', lease_key)
    redis.call('ZADD', KEYS[1], 'XX', now_ms, id)
    released = released + 1
  end
end
return released
