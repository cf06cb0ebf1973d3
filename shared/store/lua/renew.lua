-- Extends every lease the replica still holds, in one call per tick, and says how far Redis holds each session:
-- a Redis that went back (restarted from its append-only file or a snapshot, or failed over to a replica that
-- lagged) keeps the lease but not the last writes, and only the owner can tell (poller/rewound.py).
-- KEYS: 1 queue
-- ARGV: 1 lease ttl ms, 2 lease key prefix, 3 state key prefix, 4 job key prefix, then pairs: session id, token
-- Returns: one entry per pair: 0 lost (another owner, or expired and gone), else the session's {seq, promptsRev}
-- as Redis holds them (nil where missing).
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[1])
local result = {}
for i = 5, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local lease_key = ARGV[2] .. id
  if redis.call('GET', lease_key) == token then
    redis.call('PEXPIRE', lease_key, ttl)
    redis.call('ZADD', KEYS[1], 'XX', now_ms + ttl, id)
    result[#result + 1] = {redis.call('HGET', ARGV[3] .. id, 'seq'), redis.call('HGET', ARGV[4] .. id, 'promptsRev')}
  else
    result[#result + 1] = 0
  end
end
return result
