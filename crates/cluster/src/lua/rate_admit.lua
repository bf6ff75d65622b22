-- Admits one call against every window of every scope it counts against, or
-- none: the cluster-wide twin of the in-process limiter (providers crate,
-- llm/limits.rs), with Redis's clock so every node agrees on the time.
-- KEYS: ticket counter, then per window: calls (sorted set), tokens (hash)
-- ARGV: tokens, margin ms, then per window: span ms, max requests, max tokens
--       (0 for "no limit")
-- Returns {1, ticket} when admitted, {0, ms to wait} when not.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens = tonumber(ARGV[1])
local margin = tonumber(ARGV[2])
local windows = (#KEYS - 1) / 2
local wait = 0

for w = 1, windows do
  local calls, spent = KEYS[2 * w], KEYS[2 * w + 1]
  local span = tonumber(ARGV[3 * w])
  local max_requests = tonumber(ARGV[3 * w + 1])
  local max_tokens = tonumber(ARGV[3 * w + 2])
  local horizon = now - span - margin
  -- Calls that left the window give their tokens back.
  local old = redis.call('ZRANGEBYSCORE', calls, '-inf', horizon)
  if #old > 0 then
    local freed = 0
    for _, id in ipairs(old) do
      freed = freed + tonumber(redis.call('HGET', spent, id) or '0')
      redis.call('HDEL', spent, id)
    end
    redis.call('ZREMRANGEBYSCORE', calls, '-inf', horizon)
    redis.call('HINCRBYFLOAT', spent, '_sum', -freed)
  end
  local count = redis.call('ZCARD', calls)
  if count == 0 then
    redis.call('DEL', spent)
  end
  local function expiry(index)
    local entry = redis.call('ZRANGE', calls, index, index, 'WITHSCORES')
    return tonumber(entry[2]) + span + margin - now
  end
  if max_requests > 0 then
    local over = count + 1 - math.max(math.floor(max_requests), 1)
    if over > 0 then
      wait = math.max(wait, expiry(over - 1))
    end
  end
  if max_tokens > 0 then
    -- A call larger than the whole budget goes alone, once the window is empty.
    local fits = math.min(tokens, max_tokens)
    local freed = max_tokens - tonumber(redis.call('HGET', spent, '_sum') or '0')
    if freed < fits then
      local entries = redis.call('ZRANGE', calls, 0, -1, 'WITHSCORES')
      local i = 1
      while freed < fits and i < #entries do
        freed = freed + tonumber(redis.call('HGET', spent, entries[i]) or '0')
        wait = math.max(wait, tonumber(entries[i + 1]) + span + margin - now)
        i = i + 2
      end
    end
  end
end

if wait > 0 then
  return {0, math.ceil(wait)}
end
local ticket = redis.call('INCR', KEYS[1])
for w = 1, windows do
  local calls, spent = KEYS[2 * w], KEYS[2 * w + 1]
  local keep = tonumber(ARGV[3 * w]) + margin + 60000
  redis.call('ZADD', calls, now, ticket)
  redis.call('HSET', spent, ticket, tokens)
  redis.call('HINCRBYFLOAT', spent, '_sum', tokens)
  -- Windows nobody uses any more go away by themselves.
  redis.call('PEXPIRE', calls, keep)
  redis.call('PEXPIRE', spent, keep)
end
return {1, ticket}
