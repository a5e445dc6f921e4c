-- Apply a batch to a count window (store/windows.py apply_count, line by line) and hand back the
-- window, plus the circuit's state entry when its generation is not the caller's.
-- KEYS: window[, state entry[, call totals…]]. ARGV: successes, outcome, seen, size, TTL (ms),
-- max runs, known generation, known circuit id, then the count to add to each call total
-- (one per outcome key).
local seq, runs = 0, {}
-- A stored window is taken only when it is well formed (windows.parse_count's rules);
-- anything else at the key is an empty window, overwritten below.
local function count(v)
  return type(v) == 'number' and v >= 0 and v == math.floor(v)
end
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' then
  local ok, flat = pcall(cjson.decode, raw)
  local good = ok and type(flat) == 'table' and count(flat[1]) and #flat % 3 == 1
  if good then
    for i = 2, #flat, 3 do
      local n, f, s = flat[i], flat[i + 1], flat[i + 2]
      if not (count(n) and count(f) and count(s) and n > 0 and f <= n and s <= n) then
        good = false
        break
      end
    end
  end
  if good then
    seq = flat[1]
    for i = 2, #flat, 3 do runs[#runs + 1] = {flat[i], flat[i + 1], flat[i + 2]} end
  end
elseif raw then
  redis.call('DEL', KEYS[1])  -- another type at the key
end
local function split(run, older)
  local n, f, s = run[1], run[2], run[3]
  local newer = n - older
  local fn = math.floor((2 * f * newer + n) / (2 * n))
  local sn = math.floor((2 * s * newer + n) / (2 * n))
  return {older, f - fn, s - sn}, {newer, fn, sn}
end
local function pure(run)
  return (run[2] == 0 or run[2] == run[1]) and (run[3] == 0 or run[3] == run[1])
end
local function same_kind(a, b)
  return pure(a) and pure(b) and (a[2] > 0) == (b[2] > 0) and (a[3] > 0) == (b[3] > 0)
end
local successes, outcome = tonumber(ARGV[1]), tonumber(ARGV[2])
local seen, size, max_runs = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
if successes > 0 then
  local back = math.max(0, seq - seen)
  local at = #runs + 1
  while back > 0 and at > 1 do
    local n = runs[at - 1][1]
    if n <= back then
      back = back - n
      at = at - 1
    else
      local older, newer = split(runs[at - 1], n - back)
      runs[at - 1] = older
      table.insert(runs, at, newer)
      back = 0
    end
  end
  table.insert(runs, at, {successes, 0, 0})
  seq = seq + successes
end
if outcome > 0 then
  runs[#runs + 1] = {1, outcome % 2, math.floor(outcome / 2) % 2}
  seq = seq + 1
end
local merged, total = {}, 0
for _, run in ipairs(runs) do
  local last = merged[#merged]
  if last and same_kind(last, run) then
    merged[#merged] = {last[1] + run[1], last[2] + run[2], last[3] + run[3]}
  else
    merged[#merged + 1] = run
  end
  total = total + run[1]
end
while total > size do
  local excess = total - size
  if merged[1][1] <= excess then
    total = total - table.remove(merged, 1)[1]
  else
    local _, newer = split(merged[1], excess)
    merged[1] = newer
    total = size
  end
end
while #merged > max_runs do
  local a, b = merged[1], merged[2]
  table.remove(merged, 1)
  merged[1] = {a[1] + b[1], a[2] + b[2], a[3] + b[3]}
end
local flat = {seq}
for _, run in ipairs(merged) do
  flat[#flat + 1] = run[1]
  flat[#flat + 1] = run[2]
  flat[#flat + 1] = run[3]
end
local encoded = cjson.encode(flat)
redis.call('SET', KEYS[1], encoded, 'PX', ARGV[5])
-- The call totals; a malformed value there is replaced, as at the other keys.
for i = 3, #KEYS do
  if type(redis.pcall('INCRBY', KEYS[i], ARGV[i + 6])) ~= 'number' then
    redis.call('DEL', KEYS[i])
    redis.call('INCRBY', KEYS[i], ARGV[i + 6])
  end
end
if KEYS[2] then
  local state = redis.pcall('GET', KEYS[2])
  if type(state) == 'string' then
    local ok, entry = pcall(cjson.decode, state)
    if not ok or type(entry) ~= 'table' or entry['generation'] ~= tonumber(ARGV[7])
        or entry['id'] ~= tonumber(ARGV[8]) then
      return {encoded, state}
    end
  end
end
return {encoded}
