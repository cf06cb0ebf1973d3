-- Ends a session's live life after PostgreSQL committed its archive: publishes the final event and removes
-- the live state, the job and the lease; clears the ticket's pointer only if it still names this session.
-- KEYS: 1 lease, 2 state, 3 messages, 4 parts, 5 updates channel, 6 live updates channel, 7 job, 8 prompts,
--       9 queue, 10 live index, 11 ticket active pointer (any key when the session has no ticket),
--       12 the job revisions hash
-- ARGV: 1 token, 2 session id, 3 promptsRev the archive saw, 4 complete event body (JSON object without seq),
--       5 index event body (JSON object without seq), 6 has ticket ("1"/"0")
-- Returns: the final seq; -1 lease lost; -2 new prompts or a cancel arrived since the archive (keep going).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if (redis.call('HGET', KEYS[7], 'promptsRev') or '0') ~= ARGV[3] then return -2 end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('PUBLISH', KEYS[5], '{"seq":' .. seq .. ',' .. string.sub(ARGV[4], 2))
redis.call('PUBLISH', KEYS[6], '{"seq":' .. seq .. ',' .. string.sub(ARGV[5], 2))
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[7], KEYS[8])
redis.call('ZREM', KEYS[9], ARGV[2])
redis.call('ZREM', KEYS[10], ARGV[2])
redis.call('HDEL', KEYS[12], ARGV[2])
if ARGV[6] == '1' and redis.call('GET', KEYS[11]) == ARGV[2] then redis.call('DEL', KEYS[11]) end
return seq
