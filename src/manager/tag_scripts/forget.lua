-- Tag sets: see src/manager/tags.rs and storage-format.md ("Tag sets").
local key = KEYS[1]
local plain = redis.call('TYPE', key).ok == 'set'
for i = 1, #ARGV, 2 do
  local m, score = ARGV[i], ARGV[i + 1]
  if plain then
    redis.call('SREM', key, m)
  elseif score == '' or redis.call('ZSCORE', key, m) == score then
    redis.call('ZREM', key, m)
  end
end
return 0
