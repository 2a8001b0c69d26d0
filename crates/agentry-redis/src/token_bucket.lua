-- One token-bucket decision, atomically (a script runs alone on the server).
--
-- KEYS[1]: the bucket, a hash {tokens = float, at = server time in µs}.
-- ARGV[1]: tokens refilled per second. ARGV[2]: bucket size (burst).
-- ARGV[3]: 1 to take a token (acquire), 0 to only look (check).
-- Returns {allowed (1 or 0), whole tokens left, µs until a token is there}.
--
-- The clock is the server's (TIME), so every client sharing the bucket
-- agrees on it whatever their own clocks say. A missing bucket is a full
-- one: the key expires when the bucket would be full again, so an idle
-- bucket costs nothing. Only a grant that takes a token writes: a refusal
-- or a look leaves the stored state, which refills to the same value at
-- the next call, so a flood of refused requests or of checks costs no
-- writes.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local take = ARGV[3] == '1'
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
if now > at then
  tokens = tokens + (now - at) / 1000000 * rate
end
tokens = math.min(burst, tokens)
if tokens < 1 then
  return {0, 0, math.ceil((1 - tokens) / rate * 1000000)}
end
if not take then
  return {1, math.floor(tokens), 0}
end
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'at', string.format('%.0f', now))
redis.call('PEXPIRE', KEYS[1],
  string.format('%.0f', math.ceil((burst - tokens) / rate * 1000) + 1))
return {1, math.floor(tokens), 0}
