-- Tag sets: see src/manager/tags.rs and storage-format.md ("Tag sets").
local function int(x) return string.format('%d', x) end
local key = KEYS[1]
local ttl = tonumber(ARGV[1])
local skew = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('TYPE', key).ok == 'set' then
  local at = redis.call('PEXPIRETIME', key)
  if at < 0 then at = now + 4503599627370496 end
  local members = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  for _, m in ipairs(members) do redis.call('ZADD', key, int(at), m) end
  if #members > 0 then redis.call('PEXPIREAT', key, int(at)) end
end
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
