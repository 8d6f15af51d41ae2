-- The circuit breaker of `resilience::breaker::CircuitBreaker` over a time window, run by Redis
-- as one atomic step for every process that names the breaker, timed by the Redis server's
-- clock (`TIME`), so the processes' clocks need not agree. A missing key is a closed breaker
-- with an empty window.
--
-- KEYS[1]  the state, a hash:
--            open_until  when the opening ends, microseconds of the server's clock (absent or
--                        0: closed; past: half-open)
--            openings    consecutive openings since it was last closed
--            issued      half-open: the probes given out (their slots)
--            succeeded   half-open: the probes that succeeded
--            since       half-open: when a probe's slot was last given out, or a probe last
--                        answered (microseconds)
--            c:{second}, f:{second}  closed: the calls and the failures of each second
--            calls, failures         closed: their sums over the window
--            pruned      closed: the last second taken out of the sums
-- KEYS[2]  closed: the workers that reported a failure in the window, a sorted set scored by
--          the failure's time (microseconds)
--
-- ARGV[1]  "record" (a call's outcome), "probe" (may this call be a half-open probe?) or
--          "release" (a probe granted to a call that never ran: its slot is free again)
-- ARGV[2]  failure_rate: it opens when failures / calls reaches this, in billionths
-- ARGV[3]  window: whole seconds (>= 1), the calls of the seconds after `now - window`
-- ARGV[4]  minimum_calls: ...once the window holds this many calls...
-- ARGV[5]  quorum: ...and this many workers reported failures in it
-- ARGV[6]  open_for: the first opening's duration, microseconds; also how long the probes
--          have to answer before their slots are given out again
-- ARGV[7]  growth: each consecutive opening lasts this many times the one before (a float)
-- ARGV[8]  max_open: ...up to this, microseconds
-- ARGV[9]  probes: the half-open probes (>= 1), all to succeed for it to close
-- record:  ARGV[10] the worker, ARGV[11] failed (1 or 0), ARGV[12] probe (1 or 0),
--          ARGV[13] jitter: the factor of the open duration should this outcome open it
--
-- Returns the circuit as {code, retry_in}, retry_in in microseconds: {0, 0} closed, {1, t}
-- open for t more, {2, 0} this call is a probe (answered to "probe" only), {3, t} half-open
-- with the probes all out, a slot free in at most t. "record" answers half-open as {1, 0}: a
-- breaker that keeps the answer as its view asks for a probe next.

-- Redis before 5 replicates a script by its text unless told to replicate its effects, and
-- refuses a write after TIME; since 7 this is the only mode and the call a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

local CLOSED, OPEN, PROBE, BUSY = 0, 1, 2, 3
-- The failure rate's unit: billionths keep `failures / calls >= rate` exact in integers.
local SCALE = 1000000000
-- The far end of time (the year 2255): every sum saturates there, so the numbers stay exact
-- integers in Lua's doubles whatever the settings.
local FAR = 9007199254740991
-- A key outlives what it holds by this much.
local MARGIN_MS = 10

local state = KEYS[1]
local workers = KEYS[2]
local operation = ARGV[1]
local rate = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local minimum = tonumber(ARGV[4])
local quorum = tonumber(ARGV[5])
local open_for = tonumber(ARGV[6])
local growth = tonumber(ARGV[7])
local max_open = tonumber(ARGV[8])
local probes = tonumber(ARGV[9])
if not rate or rate < 0 or not window or window < 1 or not minimum or minimum < 0
    or not quorum or quorum < 0 or not open_for or open_for < 0 or not growth
    or growth < 0 or not max_open or max_open < 0 or not probes or probes < 1 then
  return redis.error_reply('ERR resilience breaker: invalid rule')
end

local time = redis.call('TIME')
local second = tonumber(time[1])
local now = second * 1000000 + tonumber(time[2])

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

-- ceil(x * y / SCALE) for integers x, y >= 0, exact while y is below 9 * 10^10, although
-- x * y itself may not fit a double: x = whole * SCALE + part, and part is cut into
-- 10^5 * high + low so that each product fits.
local function scaled_up(x, y)
  local whole, part = divmod(x, SCALE)
  local high, low = divmod(part, 100000)
  local hq, hr = divmod(high * y, 10000)
  local q, r = divmod(hr * 100000 + low * y, SCALE)
  if r > 0 then
    q = q + 1
  end
  return whole * y + hq + q
end

local fields = redis.call('HMGET', state, 'open_until', 'openings', 'issued', 'succeeded',
  'since')
local open_until = tonumber(fields[1]) or 0
local openings = tonumber(fields[2]) or 0
local issued = tonumber(fields[3]) or 0
local succeeded = tonumber(fields[4]) or 0
local since = tonumber(fields[5]) or 0

-- The duration of the opening after `grown` consecutive ones, scaled by `jitter`.
local function open_duration(grown, jitter)
  local duration = open_for * growth ^ grown
  -- 0 times an infinite growth: no duration, as the local breaker takes it.
  if duration ~= duration then
    duration = 0
  end
  duration = math.floor(math.min(duration, max_open) * jitter)
  return math.max(0, math.min(duration, FAR))
end

-- An open or half-open state is kept while it is open, then long enough for its probes and
-- their answers; past that, a breaker nobody asked about is forgotten, and is closed.
local function keep(until_)
  local ttl = math.ceil(math.max(until_ - now, 0) / 1000)
    + math.ceil(math.max(open_for, max_open) / 1000) + window * 1000 + MARGIN_MS
  redis.call('PEXPIRE', state, int(ttl))
end

-- Opens it for `duration`, the `count`th consecutive opening: the probes start afresh.
local function open(count, duration)
  local until_ = math.min(now + duration, FAR)
  redis.call('HSET', state, 'open_until', int(until_), 'openings', int(count), 'issued', 0,
    'succeeded', 0, 'since', 0)
  keep(until_)
  return {OPEN, until_ - now}
end

if operation == 'record' then
  local worker = ARGV[10]
  local failed = ARGV[11] == '1'
  local probe = ARGV[12] == '1'
  local jitter = tonumber(ARGV[13])
  if not worker or not jitter or jitter < 0 then
    return redis.error_reply('ERR resilience breaker: a record needs its worker and jitter')
  end
  if open_until > 0 then
    -- Open: an answer to a call let through before it opened, or to a probe of a half-open
    -- state since reopened. Late, it says nothing of the service now.
    if now < open_until then
      return {OPEN, open_until - now}
    end
    -- Half-open: only the probes' outcomes decide.
    if not probe then
      return {OPEN, 0}
    end
    if failed then
      return open(openings + 1, open_duration(openings, jitter))
    end
    succeeded = succeeded + 1
    if succeeded >= probes then
      -- Closed, as new: the window, its workers and the openings start afresh.
      redis.call('DEL', state, workers)
      return {CLOSED, 0}
    end
    -- An answer is progress: the probes still out have another `open_for` to answer.
    redis.call('HSET', state, 'succeeded', int(succeeded), 'since', int(now))
    keep(open_until)
    return {OPEN, 0}
  end
  -- Closed: a probe's answer comes after the probes closed it.
  if probe then
    return {CLOSED, 0}
  end

  -- Takes the seconds up to `now - window` out of the sums: one by one from the last pruned,
  -- or by a scan of the hash when that is shorter (the first call after the hash was made,
  -- or a clock that jumped).
  local cutoff = second - window
  local pruned = tonumber(redis.call('HGET', state, 'pruned'))
  local size = redis.call('HLEN', state)
  if size > 0 and not (pruned and pruned >= cutoff) then
    local sums = {c = 'calls', f = 'failures'}
    local function drop(field, kind)
      local count = tonumber(redis.call('HGET', state, field))
      if count then
        redis.call('HINCRBY', state, sums[kind], -count)
        redis.call('HDEL', state, field)
      end
    end
    if pruned and cutoff - pruned <= size then
      for s = pruned + 1, cutoff do
        drop('c:' .. int(s), 'c')
        drop('f:' .. int(s), 'f')
      end
    else
      for _, field in ipairs(redis.call('HKEYS', state)) do
        local kind, s = string.match(field, '^([cf]):(%d+)$')
        if kind and tonumber(s) <= cutoff then
          drop(field, kind)
        end
      end
    end
    redis.call('HSET', state, 'pruned', int(cutoff))
  end

  -- The window's counts are kept until this second leaves it.
  local ttl = int(math.ceil(((second + window) * 1000000 - now) / 1000) + MARGIN_MS)
  redis.call('HINCRBY', state, 'c:' .. int(second), 1)
  local calls = redis.call('HINCRBY', state, 'calls', 1)
  local failures = tonumber(redis.call('HGET', state, 'failures')) or 0
  if failed then
    redis.call('HINCRBY', state, 'f:' .. int(second), 1)
    failures = redis.call('HINCRBY', state, 'failures', 1)
    redis.call('ZADD', workers, int(now), worker)
    redis.call('PEXPIRE', workers, ttl)
  end
  redis.call('PEXPIRE', state, ttl)
  -- The workers of the window are those of its seconds, as the counts.
  redis.call('ZREMRANGEBYSCORE', workers, '-inf', '(' .. int((cutoff + 1) * 1000000))

  if calls >= math.max(minimum, 1) and failures >= scaled_up(rate, calls)
      and redis.call('ZCARD', workers) >= quorum then
    return open(1, open_duration(0, jitter))
  end
  return {CLOSED, 0}
elseif operation == 'probe' then
  if open_until == 0 then
    return {CLOSED, 0}
  end
  if now < open_until then
    return {OPEN, open_until - now}
  end
  if issued < probes then
    -- Each slot given out restarts the probes' time, so the last one given has its whole
    -- `open_for` to answer before the slots count as lost.
    redis.call('HSET', state, 'issued', int(issued + 1), 'since', int(now))
    keep(open_until)
    return {PROBE, 0}
  end
  local lost_at = math.min(since + open_for, FAR)
  if now < lost_at then
    return {BUSY, lost_at - now}
  end
  -- The probes still out have not answered in `open_for`: their callers are gone (a dropped
  -- future, a killed worker) or stuck, and their slots are given out again; the successes
  -- already recorded are kept.
  redis.call('HSET', state, 'issued', int(succeeded + 1), 'since', int(now))
  keep(open_until)
  return {PROBE, 0}
elseif operation == 'release' then
  -- A probe's slot given to a call that never ran (its limiter refused it): free again, so
  -- the fleet need not wait `open_for` for a probe that was never sent.
  if open_until > 0 and now >= open_until and issued > succeeded then
    redis.call('HSET', state, 'issued', int(issued - 1))
    keep(open_until)
  end
  return {OPEN, 0}
end
return redis.error_reply('ERR resilience breaker: unknown operation ' .. tostring(operation))
