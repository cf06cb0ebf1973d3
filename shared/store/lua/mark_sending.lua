-- Notes in the job the prompt its owner is about to send, fenced: a replica that takes the session over while the
-- send may still be carried out waits for its message to show instead of sending it again (poller/prompts.py).
-- KEYS: 1 lease, 2 job
-- ARGV: 1 token, 2 the prompt's messageID
-- Returns: 1 noted; -1 lease lost (nothing written).
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('HSET', KEYS[2], 'promptSending', ARGV[2])
return 1
