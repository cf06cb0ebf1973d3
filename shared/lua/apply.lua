-- Applies one change to a session's live state, bumps its seq and publishes the change, atomically,
-- fenced by the lease token so a poller that lost its lease can never overwrite the new owner.
-- KEYS: 1 lease, 2 state, 3 messages, 4 parts, 5 updates channel, 6 live updates channel
-- ARGV: 1 token, 2 event body (JSON object without seq), 3 index event body (JSON object without seq, or ""),
--       4 number of state field pairs, then the pairs; then the count and pairs of message upserts;
--       then the count and pairs of part upserts; then the count and ids of message removals;
--       then the count and keys of part removals
-- Returns: the new seq, or -1 when the token is not the current lease (nothing written).
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local i = 4
local CHUNK = 512  -- unpack() is bounded by Lua's C stack: write large changes in slices
local function pairs_into(key)
  local n = tonumber(ARGV[i]); i = i + 1
  for first = i, i + 2 * n - 1, 2 * CHUNK do
    redis.call('HSET', key, unpack(ARGV, first, math.min(first + 2 * CHUNK, i + 2 * n) - 1))
  end
  i = i + 2 * n
end
local function remove_from(key)
  local n = tonumber(ARGV[i]); i = i + 1
  for first = i, i + n - 1, CHUNK do
    redis.call('HDEL', key, unpack(ARGV, first, math.min(first + CHUNK, i + n) - 1))
  end
  i = i + n
end
pairs_into(KEYS[2])
pairs_into(KEYS[3])
pairs_into(KEYS[4])
remove_from(KEYS[3])
remove_from(KEYS[4])
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('PUBLISH', KEYS[5], '{"seq":' .. seq .. ',' .. string.sub(ARGV[2], 2))
if ARGV[3] ~= '' then redis.call('PUBLISH', KEYS[6], '{"seq":' .. seq .. ',' .. string.sub(ARGV[3], 2)) end
return seq
