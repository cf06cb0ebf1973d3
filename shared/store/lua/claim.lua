-- Claims due jobs for one replica: a pending job, or one whose owner's lease has expired.
-- Only queue and lease keys are touched, never live state.
-- How many: at most ARGV[3] (the room under the replica's capacity). Given ARGV[8], fewer: the replica's fair share
-- of all jobs, among the replicas whose heartbeat is at least that recent (in the pollers ZSET, by the replicas'
-- clock), less the ARGV[7] it holds, but never fewer than ARGV[6]. So the survivors of a replica that died take
-- its sessions over in one claim each, spread among them. A replica that has not yet seen the heartbeats of those
-- started beside it passes no ARGV[8], and a small ARGV[3].
-- KEYS: 1 queue, 2 pollers
-- ARGV: 1 replica id, 2 lease ttl ms, 3 max jobs, 4 lease key prefix, 5 job key prefix, 6 least, 7 held,
--       8 live since (ms, or '' for ARGV[3] flat)
-- Returns: flat list {session id, token, session id, token, ...}; token = "<epoch>:<replica>".
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if ARGV[8] ~= '' then
  local live = math.max(1, redis.call('ZCOUNT', KEYS[2], ARGV[8], '+inf'))
  local share = math.ceil(redis.call('ZCARD', KEYS[1]) / live) - tonumber(ARGV[7])
  limit = math.min(limit, math.max(tonumber(ARGV[6]), share))
end
if limit <= 0 then return {} end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, limit)
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
