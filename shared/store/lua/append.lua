-- Appends streamed text to parts' stored JSON, bumps seq and publishes the appends, atomically, fenced by the
-- lease token like apply.lua. Only the new text crosses the network, in and out: the stored part keeps its
-- whole text (a snapshot sees it all), the event carries each append with its offset and the length after it.
-- A part is appendable when its stored JSON ends with the streamed field's string (the poller writes it last):
-- the caller passes the stored length it expects, and a different one means the part is not what it wrote.
-- KEYS: 1 lease, 2 state, 3 parts, 4 updates channel
-- ARGV: 1 token, 2 session id, 3 updatedAt (ms), 4 number of appends, then per append: part key
--       (messageID/partID), field, stored bytes expected, offset, length after, the appended text JSON-escaped
--       (without quotes)
-- Returns: the new seq; -1 when the token is not the current lease; -2 when a part's stored length is not the
-- expected one or its JSON does not end with a string (nothing written either way).
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local n = tonumber(ARGV[4])
local stored = {}
for a = 0, n - 1 do
  local at = 5 + 6 * a
  if redis.call('HSTRLEN', KEYS[3], ARGV[at]) ~= tonumber(ARGV[at + 2]) then return -2 end
  local value = redis.call('HGET', KEYS[3], ARGV[at])
  if not value or string.sub(value, -2) ~= '"}' then return -2 end
  stored[a] = value
end
local events = {}
for a = 0, n - 1 do
  local at = 5 + 6 * a
  local value = stored[a]
  redis.call('HSET', KEYS[3], ARGV[at], string.sub(value, 1, -3) .. ARGV[at + 5] .. '"}')
  local message_id, part_id = string.match(ARGV[at], '^([^/]*)/(.*)$')
  events[#events + 1] = table.concat({
    '{"messageID":"', message_id, '","partID":"', part_id, '","field":"', ARGV[at + 1], '","offset":', ARGV[at + 3],
    ',"length":', ARGV[at + 4], ',"delta":"', ARGV[at + 5], '"}'})
end
redis.call('HSET', KEYS[2], 'updatedAt', ARGV[3])
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('PUBLISH', KEYS[4], table.concat({
  '{"seq":', seq, ',"type":"update","sessionId":"', ARGV[2], '","state":{"updatedAt":', ARGV[3],
  '},"appends":[', table.concat(events, ','), ']}'}))
return seq
