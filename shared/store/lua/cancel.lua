-- Asks for a session to be cancelled; its owner (or the next poller to claim it) aborts and archives it.
-- KEYS: 1 job, 2 queue, 3 lease, 4 the job revisions hash
-- ARGV: 1 session id
-- Returns: 1 requested; 0 no live job.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel', 1)
redis.call('HSET', KEYS[4], ARGV[1], redis.call('HINCRBY', KEYS[1], 'promptsRev', 1))
if redis.call('EXISTS', KEYS[3]) == 0 then
  -- nobody holds it: make it claimable now so a poller finishes the cancel at once
  local now = redis.call('TIME')
  redis.call('ZADD', KEYS[2], tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000), ARGV[1])
end
return 1
