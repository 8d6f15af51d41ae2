-- The retry budget of `resilience::budget::RetryBudget`, run by Redis as one atomic step for
-- every process that names the budget. Its state is one hash under KEYS[1], timed by the Redis
-- server's clock (`TIME`), so the processes' clocks need not agree; a missing hash is a budget
-- never used (no calls counted, a full bucket).
--
-- ARGV[1]  "deposit" (a call started), "withdraw" (a retry is about to be made) or "refund"
--          (a call succeeded and gives tokens back)
-- ARGV[2]  the model, "ratio" or "bucket", and its settings:
--   ratio:  ARGV[3] the ratio, in billionths (integer, >= 0)
--           ARGV[4] the window, whole seconds (>= 1)
--           ARGV[5] the retries always allowed per second of the window (integer, >= 0)
--   bucket: ARGV[3] the capacity, tokens (integer, >= 0)
--           ARGV[4] withdraw: what this retry costs; refund: the tokens given back (>= 0)
--
-- Returns, for "withdraw", 1 when the retry is allowed (and counted, or paid for) and 0 when
-- the budget is spent (nothing taken); 1 for "deposit" and "refund". The ratio model ignores
-- "refund", the bucket "deposit".
--
-- Ratio: fields `d:{second}` and `w:{second}` count the calls and retries of each second of
-- the server's clock, `calls` and `retries` their sums over the window (the seconds after
-- `now - window`), `pruned` the last second taken out of the sums. Each second leaves the sums
-- once, when the window has moved past it, so each step costs the same whatever the window.
-- Bucket: field `tokens`, absent when full.

-- Redis before 5 replicates a script by its text unless told to replicate its effects, and
-- refuses a write after TIME; since 7 this is the only mode and the call a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

-- The ratio's unit: billionths keep `retries <= floor * window + ratio * calls` exact.
local SCALE = 1000000000
-- A ratio budget's hash outlives the window of its last count by this much: once every count
-- has left the window, a missing hash answers the same, so idle budgets vanish.
local MARGIN_MS = 10
-- A bucket not drawn from for this long is forgotten, and a forgotten bucket is full: the
-- fleet's retries went quiet for an hour, their service had the time to recover.
local BUCKET_IDLE_S = 3600

local key = KEYS[1]
local operation = ARGV[1]
local model = ARGV[2]

-- '%.0f' writes every integer of a double exactly; Lua's own conversion keeps 14 digits.
local function int(n)
  return string.format('%.0f', n)
end

-- `x` divided by `d` (integers >= 0, d >= 1) as quotient and remainder, exact while `x` is
-- below 2^53: the double quotient may round up to the next integer, so it is corrected.
local function divmod(x, d)
  local q = math.floor(x / d)
  local r = x - q * d
  if r < 0 then
    q, r = q - 1, r + d
  elseif r >= d then
    q, r = q + 1, r - d
  end
  return q, r
end

-- floor(x * y / SCALE) for integers x, y >= 0, exact while y is below 9 * 10^10 and the result
-- below 2^53, although x * y itself may not fit a double: x = whole * SCALE + part, and part
-- is cut into 10^5 * high + low so that each product fits.
local function scaled(x, y)
  local whole, part = divmod(x, SCALE)
  local high, low = divmod(part, 100000)
  local hq, hr = divmod(high * y, 10000)
  local q = divmod(hr * 100000 + low * y, SCALE)
  return whole * y + hq + q
end

if model == 'ratio' then
  local ratio = tonumber(ARGV[3])
  local window = tonumber(ARGV[4])
  local floor = tonumber(ARGV[5])
  if not ratio or ratio < 0 or not window or window < 1 or not floor or floor < 0 then
    return redis.error_reply(
      'ERR resilience budget: ratio and floor must be >= 0, the window >= 1 s')
  end
  local time = redis.call('TIME')
  local second = tonumber(time[1])
  local now = second * 1000000 + tonumber(time[2])

  -- Takes the seconds up to `cutoff` out of the sums: one by one from the last pruned, or by
  -- a scan of the hash when that is shorter (the first step after the hash was made, or a
  -- clock that jumped).
  local function prune(cutoff)
    local pruned = tonumber(redis.call('HGET', key, 'pruned'))
    if pruned and pruned >= cutoff then
      return
    end
    local size = redis.call('HLEN', key)
    if size == 0 then
      return
    end
    local sums = {d = 'calls', w = 'retries'}
    local function drop(field, kind)
      local count = tonumber(redis.call('HGET', key, field))
      if count then
        redis.call('HINCRBY', key, sums[kind], -count)
        redis.call('HDEL', key, field)
      end
    end
    if pruned and cutoff - pruned <= size then
      for s = pruned + 1, cutoff do
        drop('d:' .. int(s), 'd')
        drop('w:' .. int(s), 'w')
      end
    else
      local fields = redis.call('HKEYS', key)
      for _, field in ipairs(fields) do
        local kind, s = string.match(field, '^([dw]):(%d+)$')
        if kind and tonumber(s) <= cutoff then
          drop(field, kind)
        end
      end
    end
    redis.call('HSET', key, 'pruned', int(cutoff))
  end

  -- Counts a call (`d`) or a retry (`w`) in this second, and keeps the hash until this second
  -- leaves the window.
  local function count(kind, sum)
    redis.call('HINCRBY', key, kind .. ':' .. int(second), 1)
    redis.call('HINCRBY', key, sum, 1)
    local ttl = math.ceil(((second + window) * 1000000 - now) / 1000) + MARGIN_MS
    redis.call('PEXPIRE', key, int(ttl))
  end

  if operation == 'deposit' then
    prune(second - window)
    count('d', 'calls')
    return 1
  elseif operation == 'withdraw' then
    prune(second - window)
    local sums = redis.call('HMGET', key, 'calls', 'retries')
    local calls = tonumber(sums[1]) or 0
    local retries = tonumber(sums[2]) or 0
    if retries + 1 > floor * window + scaled(ratio, calls) then
      return 0
    end
    count('w', 'retries')
    return 1
  elseif operation == 'refund' then
    return 1
  end
elseif model == 'bucket' then
  local capacity = tonumber(ARGV[3])
  local tokens = tonumber(ARGV[4])
  if not capacity or capacity < 0 or not tokens or tokens < 0 then
    return redis.error_reply('ERR resilience budget: capacity and tokens must be >= 0')
  end
  -- A bucket with fewer tokens than a new capacity keeps them; one with more (the capacity
  -- was lowered) holds the capacity.
  local held = math.min(tonumber(redis.call('HGET', key, 'tokens')) or capacity, capacity)

  local function store(left)
    if left >= capacity then
      -- Full is what a missing field says: the hash goes once it holds nothing else.
      redis.call('HDEL', key, 'tokens')
    else
      redis.call('HSET', key, 'tokens', int(left))
      redis.call('EXPIRE', key, BUCKET_IDLE_S)
    end
  end

  if operation == 'withdraw' then
    if held < tokens then
      return 0
    end
    if tokens > 0 then
      store(held - tokens)
    end
    return 1
  elseif operation == 'refund' then
    if held < capacity and tokens > 0 then
      store(math.min(held + tokens, capacity))
    end
    return 1
  elseif operation == 'deposit' then
    return 1
  end
else
  return redis.error_reply('ERR resilience budget: unknown model ' .. tostring(model))
end
return redis.error_reply('ERR resilience budget: unknown operation ' .. tostring(operation))
