-- Drops the delivered prompt at the head of the list, fenced, once OpenCode shows its message.
-- KEYS: 1 lease, 2 prompts
-- ARGV: 1 token, 2 the head entry exactly as read
-- Returns: 1 popped; 0 the head changed (nothing done); -1 lease lost.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('LINDEX', KEYS[2], 0) ~= ARGV[2] then return 0 end
redis.call('LPOP', KEYS[2])
return 1
