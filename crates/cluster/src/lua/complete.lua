-- Records a call's outcome. Only the holder whose acknowledgement lands first
-- records it: a duplicate run (the entry was reclaimed from a slow worker)
-- finds the entry already acknowledged and changes nothing.
-- KEYS: stream, results hash, done stream, history list
-- ARGV: group, entry id, field, outcome json, workflow id, done maxlen
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'wf', ARGV[5], 'f', ARGV[3], 'r', ARGV[4])
  -- Acknowledged entries are the only ones ever removed from a queue.
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[4])
end
return acked
