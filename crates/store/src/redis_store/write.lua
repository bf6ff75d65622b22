-- Every write of the Redis store, as one script so a batch is atomic.
--
-- ARGV[1] key prefix, ARGV[2] batch id, ARGV[3] seconds to remember the batch,
-- then operations, each an op code followed by its arguments (see ARITY).
-- Returns the results (event and audit sequence numbers, claim outcomes) joined
-- by commas, or "!exists:<id>" / "!notfound:<id>" for a refused write (nothing
-- is written then).
--
-- JSON arguments were produced by serde_json in Rust and are stored as they
-- are: decoding them here would lose integer precision. Numbers that Redis
-- compares or indexes (states, timestamps, counters) arrive as separate
-- arguments. Keys are built from the prefix, so every key of a store shares it.

local P = ARGV[1]
local batch_key = P .. ':batch:' .. ARGV[2]

-- A batch whose reply was lost is retried with the same id: answer it again
-- instead of applying it twice.
local done = redis.call('GET', batch_key)
if done then
  return done
end

-- Fixed argument counts; 'C' has a variable tail of field/value pairs.
local ARITY = { T = 7, W = 5, E = 2, X = 1, O = 3, U = 2, K = 3, A = 1, S = 4, D = 1, I = 3 }

local ops = {}
local i = 4
while i <= #ARGV do
  local code = ARGV[i]
  local n = ARITY[code]
  if code == 'C' then
    -- C id state created_ms has_submitter submitter npairs field value ...
    n = 6 + 2 * tonumber(ARGV[i + 6])
  end
  if n == nil then
    return redis.error_reply('gleitzeit: unknown store operation ' .. tostring(code))
  end
  if i + n > #ARGV then
    return redis.error_reply('gleitzeit: truncated store operation ' .. code)
  end
  local op = { code }
  for j = 1, n do
    op[j + 1] = ARGV[i + j]
  end
  ops[#ops + 1] = op
  i = i + n + 1
end

-- Refusals come before the first write so a refused batch changes nothing.
-- (Create, cancel and claim are always sent alone.)
for _, op in ipairs(ops) do
  local code = op[1]
  if code == 'C' then
    if redis.call('EXISTS', P .. ':wf:' .. op[2]) == 1 then
      return '!exists:' .. op[2]
    end
  elseif code == 'X' or code == 'O' then
    if redis.call('EXISTS', P .. ':wf:' .. op[2]) == 0 then
      return '!notfound:' .. op[2]
    end
  end
end

local function bump(key, field, by)
  redis.call('HINCRBY', key, field, by)
end

local function count_task(wf, state, by)
  bump(P .. ':stats:tasks', state, by)
  if state == 'completed' or state == 'failed' then
    bump(P .. ':tcount:' .. wf, state, by)
  end
end

-- Moves a workflow between the per-state index and counters, only when its
-- state really changes.
local function workflow_state(id, prev, state, created)
  if prev == state then
    return
  end
  if prev then
    redis.call('ZREM', P .. ':wfidx:state:' .. prev, id)
    bump(P .. ':stats:workflows', prev, -1)
  end
  redis.call('ZADD', P .. ':wfidx:state:' .. state, created, id)
  bump(P .. ':stats:workflows', state, 1)
end

local results = {}

for _, op in ipairs(ops) do
  local code = op[1]
  if code == 'C' then
    local id, state, created, has_by, by = op[2], op[3], op[4], op[5], op[6]
    local key = P .. ':wf:' .. id
    local fields = {}
    for j = 8, #op do
      fields[#fields + 1] = op[j]
    end
    redis.call('HSET', key, unpack(fields))
    redis.call('ZADD', P .. ':wfidx:all', created, id)
    redis.call('ZADD', P .. ':ids', 0, id)
    if has_by == '1' then
      redis.call('ZADD', P .. ':wfidx:by:' .. by, created, id)
    end
    workflow_state(id, nil, state, created)
  elseif code == 'T' then
    -- T workflow task json first state finished_ms("" none) finished_member
    local wf, task, json, first, state, finished, member =
      op[2], op[3], op[4], op[5], op[6], op[7], op[8]
    local state_key = P .. ':tstate:' .. wf
    local prev = redis.call('HGET', state_key, task)
    redis.call('HSET', P .. ':tasks:' .. wf, task, json)
    if not prev then
      -- Position and method are kept from the first write, as SQLite's upsert does.
      redis.call('HSET', P .. ':tfirst:' .. wf, task, first)
      bump(P .. ':tcount:' .. wf, 'total', 1)
      redis.call('HSET', state_key, task, state)
      count_task(wf, state, 1)
    elseif prev ~= state then
      redis.call('HSET', state_key, task, state)
      count_task(wf, prev, -1)
      count_task(wf, state, 1)
    end
    if finished == '' then
      redis.call('ZREM', P .. ':tfinished', member)
    else
      redis.call('ZADD', P .. ':tfinished', finished, member)
    end
  elseif code == 'W' then
    -- W id state at_ms error("" none) terminal("1"/"0")
    local id, state, at, err, terminal = op[2], op[3], op[4], op[5], op[6]
    local key = P .. ':wf:' .. id
    local prev = redis.call('HGET', key, 'state')
    if prev then
      if err == '' then
        redis.call('HDEL', key, 'error')
      else
        redis.call('HSET', key, 'error', err)
      end
      if state == 'running' and redis.call('HEXISTS', key, 'started_ms') == 0 then
        redis.call('HSET', key, 'started_ms', at)
      end
      if terminal == '1' then
        redis.call('HSET', key, 'finished_ms', at)
        redis.call('HDEL', key, 'owner')
      else
        redis.call('HDEL', key, 'finished_ms')
      end
      redis.call('HSET', key, 'state', state)
      workflow_state(id, prev, state, redis.call('HGET', key, 'created_ms'))
    end
  elseif code == 'E' then
    -- E workflow json
    local seq = string.format('%d', redis.call('INCR', P .. ':seq'))
    redis.call('HSET', P .. ':events', seq, op[3])
    redis.call('ZADD', P .. ':evidx:all', seq, seq)
    redis.call('ZADD', P .. ':evidx:wf:' .. op[2], seq, seq)
    results[#results + 1] = seq
  elseif code == 'X' then
    redis.call('HSET', P .. ':wf:' .. op[2], 'cancel', '1')
  elseif code == 'O' then
    -- O id expected_owner("" none) new_owner("" none): compare-and-set
    local key = P .. ':wf:' .. op[2]
    local current = redis.call('HGET', key, 'owner') or ''
    if current == op[3] then
      if op[4] == '' then
        redis.call('HDEL', key, 'owner')
      else
        redis.call('HSET', key, 'owner', op[4], 'cancel', '0')
      end
      results[#results + 1] = '1'
    else
      results[#results + 1] = '0'
    end
  elseif code == 'U' then
    redis.call('HSET', P .. ':users', op[2], op[3])
  elseif code == 'K' then
    -- K id hash json. Like SQLite's INSERT OR REPLACE with a unique hash:
    -- the key's old hash is forgotten and another key with the same hash goes.
    local id, hash = op[2], op[3]
    local old_hash = redis.call('HGET', P .. ':keys:hashof', id)
    if old_hash and old_hash ~= hash then
      redis.call('HDEL', P .. ':keys:idbyhash', old_hash)
    end
    local other = redis.call('HGET', P .. ':keys:idbyhash', hash)
    if other and other ~= id then
      redis.call('HDEL', P .. ':keys', other)
      redis.call('HDEL', P .. ':keys:hashof', other)
    end
    redis.call('HSET', P .. ':keys', id, op[4])
    redis.call('HSET', P .. ':keys:hashof', id, hash)
    redis.call('HSET', P .. ':keys:idbyhash', hash, id)
  elseif code == 'S' then
    -- S id expected_version("" must not exist) created_ms json: compare-and-set
    local id, expected, created, json = op[2], op[3], op[4], op[5]
    local current = redis.call('HGET', P .. ':sched:ver', id)
    if (expected == '' and not current) or (current and current == expected) then
      local version = 1
      if current then
        version = tonumber(current) + 1
      end
      redis.call('HSET', P .. ':sched', id, json)
      redis.call('HSET', P .. ':sched:ver', id, string.format('%d', version))
      redis.call('ZADD', P .. ':sched:idx', created, id)
      results[#results + 1] = '1'
    else
      results[#results + 1] = '0'
    end
  elseif code == 'D' then
    local removed = redis.call('HDEL', P .. ':sched', op[2])
    redis.call('HDEL', P .. ':sched:ver', op[2])
    redis.call('ZREM', P .. ':sched:idx', op[2])
    results[#results + 1] = string.format('%d', removed)
  elseif code == 'I' then
    -- I schedule_id created_ms workflow_id: the runs a schedule started
    redis.call('ZADD', P .. ':wfidx:sched:' .. op[2], op[3], op[4])
  elseif code == 'A' then
    local seq = string.format('%d', redis.call('INCR', P .. ':audit:seq'))
    redis.call('HSET', P .. ':audit', seq, op[2])
    redis.call('ZADD', P .. ':audit:idx', seq, seq)
    results[#results + 1] = seq
  end
end

local reply = table.concat(results, ',')
redis.call('SET', batch_key, reply, 'EX', ARGV[3])
return reply
