-- Applies one change to a session's live state, bumps its seq and publishes the change, atomically,
-- fenced by the lease token so a poller that lost its lease can never overwrite the new owner.
-- The published event is assembled here from the values written, so they cross the network once.
-- KEYS: 1 lease, 2 state, 3 messages, 4 parts, 5 updates channel, 6 live updates channel
-- ARGV: 1 token, 2 session id, 3 the event's `state` (JSON object), 4 removedMessages (JSON array),
--       5 removedParts (JSON array), 6 index event body (JSON object without seq, or ""),
--       7 number of state field pairs, then the pairs; then the count and pairs of message upserts (id, info JSON);
--       then the count and pairs of part upserts (key, part JSON); then the count and ids of message removals;
--       then the count and keys of part removals
-- Returns: the new seq, or -1 when the token is not the current lease (nothing written).
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local i = 7
local CHUNK = 512  -- unpack() is bounded by Lua's C stack: write large changes in slices
local function pairs_into(key, values)
  local n = tonumber(ARGV[i]); i = i + 1
  for first = i, i + 2 * n - 1, 2 * CHUNK do
    redis.call('HSET', key, unpack(ARGV, first, math.min(first + 2 * CHUNK, i + 2 * n) - 1))
  end
  if values then
    for v = i + 1, i + 2 * n - 1, 2 do values[#values + 1] = ARGV[v] end
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
local infos, parts = {}, {}
pairs_into(KEYS[2], nil)
pairs_into(KEYS[3], infos)
pairs_into(KEYS[4], parts)
remove_from(KEYS[3])
remove_from(KEYS[4])
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('PUBLISH', KEYS[5], table.concat({
  '{"seq":', seq, ',"type":"update","sessionId":"', ARGV[2], '","state":', ARGV[3],
  ',"messages":[', table.concat(infos, ','), '],"parts":[', table.concat(parts, ','),
  '],"removedMessages":', ARGV[4], ',"removedParts":', ARGV[5], '}'}))
if ARGV[6] ~= '' then redis.call('PUBLISH', KEYS[6], '{"seq":' .. seq .. ',' .. string.sub(ARGV[6], 2)) end
return seq
