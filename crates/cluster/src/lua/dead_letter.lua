-- Moves an entry to the dead letters and, when it names a task, records a
-- failure for it so the scheduler stops waiting.
-- KEYS: stream, dead hash, history list, results hash (or ''), done stream
-- ARGV: group, entry id, dead letter json, field, outcome json, workflow id, done maxlen
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[3])
  if ARGV[4] ~= '' then
    redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'wf', ARGV[6], 'f', ARGV[4], 'r', ARGV[5])
  end
end
return acked
