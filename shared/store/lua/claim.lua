-- Claims up to N due jobs for one replica: a pending job, or one whose owner's lease has expired.
-- Only queue and lease keys are touched, never live state.
-- KEYS: 1 queue
-- ARGV: 1 replica id, 2 lease ttl ms, 3 max jobs, 4 lease key prefix, 5 job key prefix
-- Returns: flat list {session id, token, session id, token, ...}; token = "<epoch>:<replica>".
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, id in ipairs(due) do
  local lease_key = ARGV[4] .. id
  local job_key = ARGV[5] .. id
  if redis.call('EXISTS', job_key) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    local left = redis.call('PTTL', lease_key)
    if left > 0 then
      redis.call('ZADD', KEYS[1], now_ms + left, id)
    else
      local epoch = redis.call('HINCRBY', job_key, 'epoch', 1)
      local token = epoch .. ':' .. ARGV[1]
      redis.call('SET', lease_key, token, 'PX', ttl)
      redis.call('ZADD', KEYS[1], now_ms + ttl, id)
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = token
    end
  end
end
return claimed
