-- Keeps the entries a live worker is running from looking abandoned: resets
-- their idle time, but only where this worker still holds them. Returns the
-- ids it no longer holds (taken over by another worker, or acknowledged).
-- KEYS: stream
-- ARGV: group, consumer, ids...
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  else
    table.insert(lost, id)
  end
end
return lost
