-- Hands an answer to a waiting request to the session's owner: stored in the job hash as `answer:<request id>`
-- (removed with the job when the session ends) and announced by a bumped promptsRev, like a prompt.
-- KEYS: 1 job, 2 the job revisions hash
-- ARGV: 1 session id, 2 request id, 3 the answer (JSON)
-- Returns: 1 stored; 0 no live job; -1 the request already has an answer (nothing changed).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[1], 'answer:' .. ARGV[2], ARGV[3]) == 0 then return -1 end
redis.call('HSET', KEYS[2], ARGV[1], redis.call('HINCRBY', KEYS[1], 'promptsRev', 1))
return 1
