-- Tag sets: see src/manager/tags.rs and storage-format.md ("Tag sets").
local key = KEYS[1]
if redis.call('TYPE', key).ok == 'set' then
  local out = {}
  for _, m in ipairs(redis.call('SMEMBERS', key)) do
    out[#out + 1] = m
    out[#out + 1] = ''
  end
  return out
end
return redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
