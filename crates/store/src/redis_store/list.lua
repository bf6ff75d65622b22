-- Part of a page of workflow summaries, newest first, in one round trip.
--
-- ARGV[1] key prefix, ARGV[2] the index to walk (a sorted set of ids scored by
-- created_ms, so rank order is created_ms then id, both descending),
-- ARGV[3] a state the workflow must be in ("" any; only set when the index
-- does not already imply it), ARGV[4] the rank to start at, ARGV[5] matches
-- still to skip, ARGV[6] rows wanted (> 0).
--
-- Looks at a bounded number of index entries so that one call never blocks
-- the server for long; the caller continues from the returned rank.
-- Returns next rank (-1: index exhausted), matches still to skip, then per
-- workflow: id, name, state, created_ms, finished_ms ("" none), total,
-- completed, failed.

local P = ARGV[1]
local index = ARGV[2]
local want = ARGV[3]
local rank = tonumber(ARGV[4])
local skip = tonumber(ARGV[5])
local wanted = tonumber(ARGV[6])
local budget = 2048

local ids = {}
local exhausted = false
while #ids < wanted and budget > 0 do
  local n = math.min(256, budget)
  if want == '' then
    n = math.min(n, skip + wanted - #ids)
  end
  local page = redis.call('ZREVRANGE', index, rank, rank + n - 1)
  budget = budget - n
  for _, id in ipairs(page) do
    rank = rank + 1
    if want == '' or redis.call('HGET', P .. ':wf:' .. id, 'state') == want then
      if skip > 0 then
        skip = skip - 1
      else
        ids[#ids + 1] = id
        if #ids >= wanted then
          break
        end
      end
    end
  end
  if #page < n then
    exhausted = true
    break
  end
end

local out = { exhausted and '-1' or string.format('%d', rank), string.format('%d', skip) }
for _, id in ipairs(ids) do
  local w = redis.call('HMGET', P .. ':wf:' .. id, 'name', 'state', 'created_ms', 'finished_ms')
  local c = redis.call('HMGET', P .. ':tcount:' .. id, 'total', 'completed', 'failed')
  local row = { id, w[1] or '', w[2] or '', w[3] or '0', w[4] or '', c[1] or '0', c[2] or '0', c[3] or '0' }
  for _, v in ipairs(row) do
    out[#out + 1] = v
  end
end
return out
