-- Withdraws a call the scheduler no longer waits for: a queued entry is
-- removed before any worker runs it; a running one is stopped through the
-- cancel channel, and its late outcome finds the entry already acknowledged.
-- KEYS: disp hash; ARGV: field, group, channel, message
local where = redis.call('HGET', KEYS[1], ARGV[1])
if where then
  local sep = string.find(where, ' ', 1, true)
  local stream = string.sub(where, 1, sep - 1)
  local id = string.sub(where, sep + 1)
  redis.call('XACK', stream, ARGV[2], id)
  redis.call('XDEL', stream, id)
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
