-- Publish a state entry unless the one there is a later generation of the same circuit
-- (two transitions published out of order never roll the shared state back).
local raw = redis.pcall('GET', KEYS[1])
if type(raw) ~= 'string' and raw then
  redis.call('DEL', KEYS[1])  -- another type at the key: not ours
elseif raw then
  local ok, current = pcall(cjson.decode, raw)
  if ok and type(current) == 'table' and current['id'] == tonumber(ARGV[2])
      and type(current['generation']) == 'number'
      and current['generation'] > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
