-- Apply a batch to a count window (store/windows.py apply_count, line by line) and hand back the
-- window, plus the circuit's state entry when its generation is not the caller's.
-- KEYS: window[, state entry[, call totals…]]. ARGV: successes, outcome, seen, size, TTL (ms),
-- max runs, known generation, known circuit id, then the count to add to each call total
-- (one per outcome key).
local seq, flat, total, tidy = 0, {0}, 0, true
-- A stored window is taken only when it is well formed (windows.parse_count's rules);
-- anything else at the key is an empty window, overwritten below.
local function count(v)
  return type(v) == 'number' and v >= 0 and v == math.floor(v)
end
-- The kind of a run whose calls all failed or not, all slow or not (1 failed, 2 slow, 3
-- both, 0 neither); false for a mixed run, which never merges with another.
local function kind(n, f, s)
  return (f == 0 or f == n) and (s == 0 or s == n) and (f > 0 and 1 or 0) + (s > 0 and 2 or 0)
end
local raw = redis.pcall('GET', KEYS[1])
if type(raw) == 'string' then
  local ok, stored = pcall(cjson.decode, raw)
  local good = ok and type(stored) == 'table' and count(stored[1]) and #stored % 3 == 1
  local last = nil
  if good then
    for i = 2, #stored, 3 do
      local n, f, s = stored[i], stored[i + 1], stored[i + 2]
      if not (count(n) and count(f) and count(s) and n > 0 and f <= n and s <= n) then
        good = false
        break
      end
      total = total + n
      local k = kind(n, f, s)
      if k and k == last then tidy = false end  -- two neighbours of one kind: merged below
      last = k
    end
  end
  if good then
    seq, flat = stored[1], stored
  else
    total, tidy = 0, true
  end
elseif raw then
  redis.call('DEL', KEYS[1])  -- another type at the key
end
local successes, outcome = tonumber(ARGV[1]), tonumber(ARGV[2])
local seen, size, max_runs = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local encoded
local runs = (#flat - 1) / 3
local at = #flat - 2
local joins = runs > 0 and kind(flat[at], flat[at + 1], flat[at + 2]) == outcome
if successes == 0 and outcome >= 1 and outcome <= 3 and tidy and total < size
    and (joins and runs <= max_runs or runs < max_runs) then
  -- One call and nothing batched (a failure), nothing leaves the window: the call joins
  -- the newest run or follows it, which is what the general steps below come to.
  local f, s = outcome % 2, math.floor(outcome / 2) % 2
  if joins then
    flat[at], flat[at + 1], flat[at + 2] = flat[at] + 1, flat[at + 1] + f, flat[at + 2] + s
  else
    flat[#flat + 1], flat[#flat + 2], flat[#flat + 3] = 1, f, s
  end
  flat[1] = seq + 1
  encoded = cjson.encode(flat)
else
  local runs = {}
  for i = 2, #flat, 3 do runs[#runs + 1] = {flat[i], flat[i + 1], flat[i + 2]} end
  local function split(run, older)
    local n, f, s = run[1], run[2], run[3]
    local newer = n - older
    local fn = math.floor((2 * f * newer + n) / (2 * n))
    local sn = math.floor((2 * s * newer + n) / (2 * n))
    return {older, f - fn, s - sn}, {newer, fn, sn}
  end
  local function same_kind(a, b)
    local k = kind(a[1], a[2], a[3])
    return k and k == kind(b[1], b[2], b[3])
  end
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
  local out = {seq}
  for _, run in ipairs(merged) do
    out[#out + 1] = run[1]
    out[#out + 1] = run[2]
    out[#out + 1] = run[3]
  end
  encoded = cjson.encode(out)
end
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
    -- An entry of ours starts {"id":…,"state":"…","generation":…, (compact JSON, written by
    -- CircuitEntry.to_json): its id and generation are read there, without decoding the
    -- whole entry; anything written otherwise is decoded, as before.
    local id, generation = string.match(state, '^{"id":(%d+),"state":"[%a_]+","generation":(%d+),')
    if id then
      if tonumber(generation) ~= tonumber(ARGV[7]) or tonumber(id) ~= tonumber(ARGV[8]) then
        return {encoded, state}
      end
    else
      local ok, entry = pcall(cjson.decode, state)
      if not ok or type(entry) ~= 'table' or entry['generation'] ~= tonumber(ARGV[7])
          or entry['id'] ~= tonumber(ARGV[8]) then
        return {encoded, state}
      end
    end
  end
end
return {encoded}
