-- Marks a node lost once, however many schedulers notice.
-- KEYS: node state hash; ARGV: node id, expected state, new state
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
