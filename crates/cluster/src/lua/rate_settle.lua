-- Corrects an admitted call's tokens to what it really used, or (with no
-- tokens given) takes the call back because it never went out.
-- KEYS: per window: calls (sorted set), tokens (hash)
-- ARGV: ticket, [tokens]
local ticket = ARGV[1]
local used = tonumber(ARGV[2])
for w = 1, #KEYS / 2 do
  local calls, spent = KEYS[2 * w - 1], KEYS[2 * w]
  local before = redis.call('HGET', spent, ticket)
  if before then
    if used then
      redis.call('HSET', spent, ticket, used)
      redis.call('HINCRBYFLOAT', spent, '_sum', used - tonumber(before))
    else
      redis.call('HDEL', spent, ticket)
      redis.call('ZREM', calls, ticket)
      redis.call('HINCRBYFLOAT', spent, '_sum', -tonumber(before))
    end
  end
end
return 0
