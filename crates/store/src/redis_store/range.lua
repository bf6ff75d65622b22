-- Entries of a log (events or audit) after a sequence number, in order.
--
-- ARGV[1] the index (sorted set, member and score = seq), ARGV[2] the hash
-- seq -> JSON, ARGV[3] the sequence number to start after, ARGV[4] how many
-- (> 0; the caller pages, so one call stays short).
-- Returns seq, json, seq, json, ...

local seqs = redis.call('ZRANGEBYSCORE', ARGV[1], '(' .. ARGV[3], '+inf', 'LIMIT', 0, ARGV[4])
local out = {}
if #seqs == 0 then
  return out
end
local values = redis.call('HMGET', ARGV[2], unpack(seqs))
for j, seq in ipairs(seqs) do
  if values[j] then
    out[#out + 1] = seq
    out[#out + 1] = values[j]
  end
end
return out
