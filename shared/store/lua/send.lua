-- Appends a follow-up prompt to a live job; the owning poller notices the bumped promptsRev.
-- KEYS: 1 job, 2 prompts, 3 the job revisions hash
-- ARGV: 1 prompt (JSON string), 2 session id
-- Returns: 1 appended; 0 no live job (the caller revives the archived session instead).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[2], redis.call('HINCRBY', KEYS[1], 'promptsRev', 1))
return 1
