-- Enqueues one task call unless this attempt was enqueued before (a restarted
-- scheduler re-dispatches the tasks it finds running; they must not run twice).
-- KEYS: disp hash, stream, queues hash
-- ARGV: field, payload, queue meta json, group
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return 0
end
if redis.call('HEXISTS', KEYS[3], KEYS[2]) == 0 then
  -- The group starts at 0 so no entry added before a worker arrives is missed.
  redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[4], '0', 'MKSTREAM')
  redis.call('HSET', KEYS[3], KEYS[2], ARGV[3])
end
local id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], KEYS[2] .. ' ' .. id)
return 1
