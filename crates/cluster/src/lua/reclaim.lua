-- Takes over entries whose holder stopped refreshing them (a dead worker),
-- notes that holder in the entry's history, and reports how often each entry
-- was delivered, so repeat killers go to the dead letters.
-- KEYS: stream
-- ARGV: group, consumer, min idle ms, count, history key prefix
local stale = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', ARGV[4])
local out = {}
for _, p in ipairs(stale) do
  local id, holder = p[1], p[2]
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)
  local entry = claimed[1]
  if entry then
    local history = ARGV[5] .. id
    redis.call('RPUSH', history, holder)
    redis.call('EXPIRE', history, 86400)
    local payload = ''
    local fields = entry[2]
    if fields then
      for i = 1, #fields, 2 do
        if fields[i] == 'm' then payload = fields[i + 1] end
      end
    end
    table.insert(out, {id, payload, p[4] + 1})
  elseif claimed[1] == nil and redis.call('XRANGE', KEYS[1], id, id)[1] == nil then
    -- Deleted while pending (cancelled): nothing to run; drop the reference.
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
return out
