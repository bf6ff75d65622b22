-- Forgets a node gone for long: its records, and its consumer in each queue's
-- group, but only where it holds nothing (deleting a consumer would drop the
-- entries it holds from the group's pending list: they would never run).
-- KEYS: nodes hash, node state hash, queues hash; ARGV: node id, group
local holding = 0
for _, stream in ipairs(redis.call('HKEYS', KEYS[3])) do
  if redis.call('EXISTS', stream) == 1 then
    local ok, pending = pcall(redis.call, 'XPENDING', stream, ARGV[2], '-', '+', 1, ARGV[1])
    if ok and #pending == 0 then
      pcall(redis.call, 'XGROUP', 'DELCONSUMER', stream, ARGV[2], ARGV[1])
    elseif ok then
      holding = holding + 1
    end
  end
end
if holding == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return holding
