-- Adds members to a tag's sorted set: KEYS[1] the set, ARGV[1] their time to live in ms,
-- ARGV[2] the skew margin in ms, the rest the keys.
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local skew = tonumber(ARGV[2])
local now = now_ms()
to_sorted(key, skew, now)
local top = now + ttl
for i = 3, #ARGV do
  local score = now + ttl
  local old = redis.call('ZSCORE', key, ARGV[i])
  if old and tonumber(old) >= score then score = tonumber(old) + 1 end
  redis.call('ZADD', key, int(score), ARGV[i])
  if score > top then top = score end
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. int(now - skew))
redis.call('PEXPIREAT', key, int(top + skew), 'NX')
redis.call('PEXPIREAT', key, int(top + skew), 'GT')
return 0
