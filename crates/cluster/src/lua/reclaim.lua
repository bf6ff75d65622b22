-- Takes over entries whose holder stopped refreshing them (a dead worker) and
-- reports how often each was delivered, so repeat killers go to the dead letters.
-- KEYS: stream
-- ARGV: group, consumer, min idle ms, count
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local out = {}
for _, entry in ipairs(claimed[2]) do
  local id = entry[1]
  local fields = entry[2]
  local payload = ''
  if fields then
    for i = 1, #fields, 2 do
      if fields[i] == 'm' then payload = fields[i + 1] end
    end
  end
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  local deliveries = 1
  if pending[1] then deliveries = pending[1][4] end
  table.insert(out, {id, payload, deliveries})
end
return out
