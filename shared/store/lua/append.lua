-- Appends text to parts' stored JSON, bumps seq and publishes the appends, atomically, fenced by the lease token
-- like apply.lua. Only the new text crosses the network, in and out: the stored part keeps its whole text (a
-- snapshot sees it all), the event carries each append with its offset and the length after it. A part is
-- appendable because the poller stores its streamed field last: `{…other fields…,"text":"…"}`. An append may also
-- replace the other fields (a part that ends keeps its text and gets `time.end`): then the new prefix is passed,
-- and the event's `part` is the part without its text.
-- KEYS: 1 lease, 2 state, 3 parts, 4 updates channel
-- ARGV: 1 token, 2 session id, 3 updatedAt (ms), 4 number of appends, then per append: part key (messageID/partID,
--       ids escaped), field, stored bytes expected, bytes of the stored prefix (up to the text's first character),
--       the new prefix ("" keeps it), offset, length after, the appended text JSON-escaped
-- Returns: the new seq; -1 when the token is not the current lease; -2 when a part is not stored as the caller
-- expects (length, or where its text starts) — nothing written either way.
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local n = tonumber(ARGV[4])
-- ids go into the event as JSON strings: a quote, backslash or control character in one is escaped (was: written as
-- it was, the update was no JSON and every client re-synced, for every token)
local function json_text(s)
  return (string.gsub(s, '[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == '\\' then return '\\\\' end
    return string.format('\\u%04x', string.byte(c))
  end))
end
-- an id as the part key escapes it (shared/models.py part_key_of: `%` and `/` as %25 and %2F)
local function key_id(s)
  if not string.find(s, '%', 1, true) then return s end
  return (string.gsub(string.gsub(s, '%%2F', '/'), '%%25', '%%'))
end
local WIDTH = 8
local stored = {}
for a = 0, n - 1 do
  local at = 5 + WIDTH * a
  local marker = '"' .. ARGV[at + 1] .. '":"'
  local prefix_bytes = tonumber(ARGV[at + 3])
  if redis.call('HSTRLEN', KEYS[3], ARGV[at]) ~= tonumber(ARGV[at + 2]) then return -2 end
  local value = redis.call('HGET', KEYS[3], ARGV[at])
  if not value or string.sub(value, -2) ~= '"}'
    or string.sub(value, prefix_bytes - #marker + 1, prefix_bytes) ~= marker then return -2 end
  stored[a] = value
end
local events = {}
for a = 0, n - 1 do
  local at = 5 + WIDTH * a
  local value, prefix = stored[a], ARGV[at + 4]
  local prefix_bytes = tonumber(ARGV[at + 3])
  local text = string.sub(value, prefix_bytes + 1, -3)
  if prefix == '' then prefix = string.sub(value, 1, prefix_bytes) end
  redis.call('HSET', KEYS[3], ARGV[at], prefix .. text .. ARGV[at + 7] .. '"}')
  local message_id, part_id = string.match(ARGV[at], '^([^/]*)/(.*)$')
  message_id, part_id = key_id(message_id), key_id(part_id)
  local event = {
    '{"messageID":"', json_text(message_id), '","partID":"', json_text(part_id), '","field":"', json_text(ARGV[at + 1]),
    '","offset":', ARGV[at + 5],
    ',"length":', ARGV[at + 6], ',"delta":"', ARGV[at + 7], '"'}
  if ARGV[at + 4] ~= '' then
    -- the part without its text: the prefix minus `"field":"` (and the comma before it), closed
    local head = string.sub(prefix, 1, #prefix - #('"' .. ARGV[at + 1] .. '":"'))
    if string.sub(head, -1) == ',' then head = string.sub(head, 1, -2) end
    event[#event + 1] = ',"part":' .. head .. '}'
  end
  event[#event + 1] = '}'
  events[#events + 1] = table.concat(event)
end
redis.call('HSET', KEYS[2], 'updatedAt', ARGV[3])
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('PUBLISH', KEYS[4], table.concat({
  '{"seq":', seq, ',"type":"update","sessionId":"', ARGV[2], '","state":{"updatedAt":', ARGV[3],
  '},"appends":[', table.concat(events, ','), ']}'}))
return seq
