-- Apply one batch's tile records to ONE entity hash, once per source offset.
-- The hash and record layout (format 3, binary) are described in
-- featurestore/online/layout.py; the merge laws in featurestore/features/spec.py.
--
-- KEYS[1]  the entity hash of (view, version, entity)
-- ARGV[1]  key TTL in ms
-- ARGV[2]  value kinds, one char per value: 'p' plain, 's' with a sketch, 't' text,
--          'u' text with a sketch
-- ARGV[3]  the merge law of each part a value keeps, in record order, value after value
--          separated by commas (layout.Record.laws): 'a' add, 'n' min, 'x' max, and of
--          the latest value: 'v' the value, 't' its time, 'o' its offset
-- ARGV[4]  segment count      ARGV[5] prune count      ARGV[6] sketch size K
-- then per segment:  offset field, min offset, max offset, tile field, record
-- then per prune:    tile field prefix ("<g>,"), oldest tile index to keep
--
-- Returns the number of segments applied (0: all were applied before), or -1 when a
-- segment straddles the stored offset (a replay cut at other batch boundaries): the
-- caller then resends that entity one event per segment. Nothing is written before
-- every segment is classified, so -1 leaves the hash untouched.
local key = KEYS[1]
local kinds, laws = ARGV[2], ARGV[3]
local nseg, nprune, K = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local BASE = 7
local PRUNE_EVERY = 8
local HEADER, NEWEST = 3, 3  -- tile ms, tile index, newest event time (1-based slot 3)

local applied = {}
for i = 0, nseg - 1 do
  local j = BASE + i * 5
  local f = ARGV[j]
  if applied[f] == nil then applied[f] = tonumber(redis.call('HGET', key, f) or '-1') end
  if tonumber(ARGV[j + 1]) <= applied[f] and tonumber(ARGV[j + 2]) > applied[f] then
    return -1
  end
end

local nvalues = #kinds
local sketched, texts = {}, {}
for v = 1, nvalues do
  local c = string.sub(kinds, v, v)
  if c == 's' or c == 'u' then sketched[#sketched + 1] = v end
  if c == 't' or c == 'u' then texts[#texts + 1] = v end
end
-- Per value: its laws, its first slot (1-based in the fixed part) and, when it keeps
-- the latest value, the slots of that value, its time and its offset.
local vlaws, first, value_slot, time_slot, offset_slot = {}, {}, {}, {}, {}
local nparts = 0
for part in string.gmatch(laws .. ',', '([^,]*),') do
  local v = #vlaws + 1
  vlaws[v], first[v] = part, HEADER + nparts + 1
  local at = string.find(part, 'v')
  if at then
    value_slot[v], time_slot[v] = first[v] + at - 1, first[v] + string.find(part, 't') - 1
    offset_slot[v] = first[v] + string.find(part, 'o') - 1
  end
  nparts = nparts + #part
end
local WIDTH = HEADER + nparts + #sketched
local FIXED = '<' .. string.rep('d', WIDTH)

-- A NaN is null; NaN ~= NaN.
local function null(x) return x ~= x end

-- A record as {fixed = {...}, sketch = {[v] = {hashes}}, text = {[v] = bytes}}.
local function decode(record)
  local fixed = {struct.unpack(FIXED, record)}
  local pos = fixed[WIDTH + 1]
  fixed[WIDTH + 1] = nil
  local sketch, text = {}, {}
  for i, v in ipairs(sketched) do
    local n = fixed[HEADER + nparts + i]
    local hashes = {}
    if n > 0 then
      hashes = {struct.unpack('<' .. string.rep('d', n), record, pos)}
      pos = hashes[n + 1]
      hashes[n + 1] = nil
    end
    sketch[v] = hashes
  end
  for _, v in ipairs(texts) do
    local len = fixed[value_slot[v]]
    if null(len) then text[v] = '' else
      text[v] = string.sub(record, pos, pos + len - 1)
      pos = pos + len
    end
  end
  return {fixed = fixed, sketch = sketch, text = text}
end

local function encode(r)
  local out = {struct.pack(FIXED, unpack(r.fixed))}
  for _, v in ipairs(sketched) do
    local hashes = r.sketch[v]
    if #hashes > 0 then out[#out + 1] = struct.pack('<' .. string.rep('d', #hashes), unpack(hashes)) end
  end
  for _, v in ipairs(texts) do out[#out + 1] = r.text[v] end
  return table.concat(out)
end

local function add(a, b)
  if null(a) then return b end
  if null(b) then return a end
  return a + b
end

local function pick(a, b, b_wins)
  if null(a) then return b end
  if null(b) then return a end
  if b_wins(b, a) then return b end
  return a
end

local function lt(x, y) return x < y end
local function gt(x, y) return x > y end

-- The K smallest distinct hashes of two ascending lists.
local function union(xs, ys)
  local out, i, j, n, last = {}, 1, 1, 0, nil
  while n < K and (i <= #xs or j <= #ys) do
    local h
    if j > #ys or (i <= #xs and xs[i] <= ys[j]) then h = xs[i]; i = i + 1
    else h = ys[j]; j = j + 1 end
    if h ~= last then n = n + 1; out[n] = h; last = h end
  end
  return out
end

-- Merge record b into record a (same tile): the newest times take the max, counts and
-- sums add, min/max combine, last goes to the higher (time, offset), sketches keep the
-- K smallest hashes.
local function merge(a, b)
  local x, y = a.fixed, b.fixed
  x[NEWEST] = pick(x[NEWEST], y[NEWEST], gt)
  for v = 1, nvalues do
    local newer = false
    if time_slot[v] then
      local at, bt = x[time_slot[v]], y[time_slot[v]]
      newer = not null(bt) and (null(at) or bt > at or
        (bt == at and y[offset_slot[v]] > x[offset_slot[v]]))
    end
    local law_of, base = vlaws[v], first[v] - 1
    for p = 1, #law_of do
      local law, i = string.sub(law_of, p, p), base + p
      if law == 'a' then x[i] = add(x[i], y[i])
      elseif law == 'n' then x[i] = pick(x[i], y[i], lt)
      elseif law == 'x' then x[i] = pick(x[i], y[i], gt)
      elseif newer then x[i] = y[i] end  -- 'v', 't', 'o': the latest's three parts
    end
    if newer and a.text[v] ~= nil then a.text[v] = b.text[v] end
  end
  for i, v in ipairs(sketched) do
    local merged = union(a.sketch[v], b.sketch[v])
    a.sketch[v] = merged
    x[HEADER + nparts + i] = #merged
  end
  return a
end

local written, created, newest = 0, false, {}
for i = 0, nseg - 1 do
  local j = BASE + i * 5
  local f = ARGV[j]
  if tonumber(ARGV[j + 1]) > applied[f] then
    local field, record = ARGV[j + 3], ARGV[j + 4]
    local old = redis.call('HGET', key, field)
    if old then
      redis.call('HSET', key, field, encode(merge(decode(old), decode(record))))
    else
      redis.call('HSET', key, field, record)
      -- Pruning scans every field: amortise it over tiles (1 in PRUNE_EVERY new tiles).
      local index = tonumber(string.match(field, ',(-?%d+)$'))
      if index % PRUNE_EVERY == 0 then created = true end
    end
    local hi = tonumber(ARGV[j + 2])
    if newest[f] == nil or hi > newest[f] then newest[f] = hi end
    written = written + 1
  end
end
if written == 0 then return 0 end
for f, hi in pairs(newest) do redis.call('HSET', key, f, string.format('%d', hi)) end

-- A new tile appeared (one in PRUNE_EVERY): drop tiles that fell out of their
-- granularity's retention. Reads select tiles by window, so a tile kept a little longer
-- changes no value; pruning only bounds the hash.
if created and nprune > 0 then
  local base = BASE + nseg * 5
  for _, field in ipairs(redis.call('HKEYS', key)) do
    for i = 0, nprune - 1 do
      local prefix = ARGV[base + i * 2]
      if string.sub(field, 1, #prefix) == prefix then
        if tonumber(string.sub(field, #prefix + 1)) < tonumber(ARGV[base + i * 2 + 1]) then
          redis.call('HDEL', key, field)
        end
      end
    end
  end
end
redis.call('PEXPIRE', key, ARGV[1])
return written
