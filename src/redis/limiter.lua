-- The GCRA of `resilience::limiter::RateLimiter`, run by Redis as one atomic step for every
-- process that names the limiter. The whole state is one number under KEYS[1]: the
-- theoretical arrival time (TAT), in microseconds since the Unix epoch on the Redis server's
-- clock, so the processes' clocks need not agree. A missing key is a limiter never used.
--
-- ARGV[1]  "reserve" or "pause"
-- ARGV[2]  emission: the spacing of permits, microseconds (at least 1)
-- ARGV[3]  tolerance: how far ahead of its even spacing a permit may go, microseconds
-- ARGV[4]  reserve: the longest wait the caller accepts, microseconds (absent: any wait);
--          pause: how long from now no permit may go, microseconds
--
-- Returns, for "reserve", {1, wait} when a permit was reserved `wait` microseconds from now,
-- or {0, wait} when that wait is longer than the caller accepts (nothing is stored then); for
-- "pause", {1, 0} when the pause moved later, {0, 0} when it changed nothing.

-- Redis before 5 replicates a script by its text unless told to replicate its effects, and
-- refuses a write after TIME; since 7 this is the only mode and the call a no-op.
if redis.replicate_commands then
  redis.replicate_commands()
end

-- The far end of time (the year 2255): every sum saturates there, so the numbers stay exact
-- integers in Lua's doubles whatever the settings.
local FAR = 9007199254740991
-- A key outlives its TAT by this much: once the TAT is past, a missing key answers the same,
-- so idle limiters vanish instead of piling up.
local MARGIN_MS = 10

local key = KEYS[1]
local operation = ARGV[1]
local emission = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
if not emission or emission < 1 or not tolerance or tolerance < 0 then
  return redis.error_reply('ERR resilience limiter: emission must be >= 1 and tolerance >= 0')
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
-- GET answers false for a missing key, and tonumber(false) is nil: a fresh limiter. A TAT in
-- the past is one too: idle time is not banked beyond the tolerance.
local tat = math.max(tonumber(redis.call('GET', key)) or now, now)

-- Stores `at` as the TAT, kept until it is past.
local function store(at)
  local ttl = math.ceil((at - now) / 1000) + MARGIN_MS
  -- '%.0f' writes every integer of a double exactly; Lua's own conversion keeps 14 digits.
  redis.call('SET', key, string.format('%.0f', at), 'PX', string.format('%.0f', ttl))
end

if operation == 'reserve' then
  local max_wait = tonumber(ARGV[4])
  local start = math.max(now, tat - tolerance)
  local wait = start - now
  if max_wait and wait > max_wait then
    return {0, wait}
  end
  store(math.min(tat + emission, FAR))
  return {1, wait}
elseif operation == 'pause' then
  local wait = tonumber(ARGV[4])
  if not wait or wait < 0 then
    return redis.error_reply('ERR resilience limiter: a pause needs its wait, >= 0')
  end
  -- A TAT of `now + wait + tolerance` makes `now + wait` the first conforming time and spends
  -- the burst: the permits after the pause are evenly spaced.
  local target = math.min(now + wait + tolerance, FAR)
  if target <= tat then
    return {0, 0}
  end
  store(target)
  return {1, 0}
end
return redis.error_reply('ERR resilience limiter: unknown operation ' .. tostring(operation))
