-- Drops a session whose live state Redis holds behind what its owner wrote (poller/rewound.py), fenced by the
-- owner's lease, for the PostgreSQL backstop's requeue to rebuild it from the row: the lease, the state, its
-- messages and parts, the job and its prompts, and its entries in the queue, the live index and the job revisions.
-- Nothing is published: the requeue's `reset` tells every client to take a fresh snapshot.
-- KEYS: 1 lease, 2 state, 3 messages, 4 parts, 5 job, 6 prompts, 7 queue, 8 live index, 9 the job revisions hash
-- ARGV: 1 token, 2 session id
-- Returns: 0 the token is not the current lease (nothing dropped); else what the job held that its row may not, for
-- the requeue to carry: {1, the promptSending mark (nil if none), the prompts still queued}.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local held = {1, redis.call('HGET', KEYS[5], 'promptSending'), redis.call('LRANGE', KEYS[6], 0, -1)}
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[7], ARGV[2])
redis.call('ZREM', KEYS[8], ARGV[2])
redis.call('HDEL', KEYS[9], ARGV[2])
return held
