-- Records a job, its prompts, the pending live state and the ticket's active pointer in one step.
-- Used by enqueue (new session), send to an archived session (revive) and the PostgreSQL backstop.
-- KEYS: 1 job, 2 prompts, 3 queue, 4 state, 5 messages, 6 parts, 7 live index, 8 live updates channel,
--       9 ticket active pointer (any key when the session has no ticket), 10 the session's updates channel,
--       11 the job revisions hash
-- ARGV: 1 session id, 2 job fields (JSON object of strings, `epoch` included), 3 state fields (JSON object of strings),
--       4 prompts (JSON array of JSON strings), 5 seeded messages (JSON object id -> info JSON),
--       6 seeded parts (JSON object key -> part JSON), 7 index event body (JSON object, without seq),
--       8 has ticket ("1"/"0"), 9 when the job exists: "append" its prompts to it, or "skip",
--       10 the seq the live state starts at: 1, or past every seq an earlier run of the session published
-- Returns: 1 created; 0 the job existed and the prompts were appended (its epoch raised to ARGV[2]'s if that is
-- higher, its cancel set if ARGV[2]'s is); -1 the job existed, nothing done.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local prompts = cjson.decode(ARGV[4])

if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[9] ~= 'append' then return -1 end
  for _, p in ipairs(prompts) do redis.call('RPUSH', KEYS[2], p) end
  -- a revival racing another (the backstop, a send, a cancel) may have read its row later and written a higher
  -- epoch into it: the job takes it, or every claim would be refused by PostgreSQL until claims counted up to it;
  -- and a cancel the revival carries is the job's too
  local job = cjson.decode(ARGV[2])
  local epoch = tonumber(job.epoch)
  if epoch and epoch > (tonumber(redis.call('HGET', KEYS[1], 'epoch')) or 0) then
    redis.call('HSET', KEYS[1], 'epoch', job.epoch)
  end
  if job.cancel == '1' then redis.call('HSET', KEYS[1], 'cancel', '1') end
  redis.call('HSET', KEYS[11], ARGV[1], redis.call('HINCRBY', KEYS[1], 'promptsRev', 1))
  return 0
end

local function hset_object(key, json)
  local obj = cjson.decode(json)
  local flat = {}
  for k, v in pairs(obj) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  if #flat > 0 then redis.call('HSET', key, unpack(flat)) end
end

redis.call('DEL', KEYS[2], KEYS[4], KEYS[5], KEYS[6])
hset_object(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'promptsRev', 0)
redis.call('HSET', KEYS[11], ARGV[1], 0)
for _, p in ipairs(prompts) do redis.call('RPUSH', KEYS[2], p) end
hset_object(KEYS[4], ARGV[3])
local seq = ARGV[10] or '1'  -- kept as its digits: a Lua number past 1e14 would be written with an exponent
if not string.match(seq, '^[1-9]%d*$') then seq = '1' end
redis.call('HSET', KEYS[4], 'seq', seq, 'updatedAt', now_ms)
hset_object(KEYS[5], ARGV[5])
hset_object(KEYS[6], ARGV[6])
redis.call('ZADD', KEYS[3], now_ms, ARGV[1])
redis.call('ZADD', KEYS[7], tonumber(redis.call('HGET', KEYS[4], 'startedAt')) or now_ms, ARGV[1])
if ARGV[8] == '1' then redis.call('SET', KEYS[9], ARGV[1]) end
redis.call('PUBLISH', KEYS[8], '{"seq":' .. seq .. ',' .. string.sub(ARGV[7], 2))
-- the live state starts again: anyone following the session must take a fresh snapshot
redis.call('PUBLISH', KEYS[10], '{"seq":' .. seq .. ',"type":"reset","sessionId":"' .. ARGV[1] .. '"}')
return 1
