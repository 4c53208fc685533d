-- Apply one batch's tile records to entity hashes, once per source offset.
-- The hash and record layout (format 3, binary) are described in
-- featurestore/online/layout.py; the merge laws in featurestore/features/spec.py.
--
-- KEYS     the entity hashes of (view, version, entity): many per call on one Redis,
--          one per call on a Cluster (a script's keys must share a slot)
-- ARGV[1]  key TTL in ms
-- ARGV[2]  value kinds, one char per value: 'p' plain, 's' with a sketch, 't' text,
--          'u' text with a sketch
-- ARGV[3]  the merge law of each part a value keeps, in record order, value after value
--          separated by commas (layout.Record.laws): 'a' add, 'n' min, 'x' max, and of
--          the latest value: 'v' the value, 't' its time, 'o' its offset
-- ARGV[4]  sketch size K     ARGV[5] segments S (all keys)     ARGV[6] prunes P
-- then one segment count per key, then one prune count per key,
-- then the segments column by column (S offset fields, S min offsets, S max offsets,
-- S tile fields, S records), key after key in KEYS order,
-- then the prunes column by column (P tile field prefixes "<g>,", P oldest tile index
-- to keep).
--
-- Returns one number per key: the segments applied (0: all were applied before), or -1
-- when a segment straddles the stored offset (a replay cut at other batch boundaries):
-- the caller then resends that entity one event per segment. Nothing is written to a
-- key before every segment of it is classified, so -1 leaves its hash untouched. A key
-- whose stored record cannot be merged stops the call with "APPLY <key number> ...".
local nkeys = #KEYS
local ttl, kinds, laws = ARGV[1], ARGV[2], ARGV[3]
local K, S, P = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local COUNTS = 6                        -- ARGV[COUNTS + k]: key k's segment count
local PRUNES = COUNTS + nkeys           -- ARGV[PRUNES + k]: key k's prune count
local OFIELD = PRUNES + nkeys           -- ARGV[OFIELD + i]: segment i's offset field
local LO, HI, FIELD, RECORD = OFIELD + S, OFIELD + 2 * S, OFIELD + 3 * S, OFIELD + 4 * S
local PREFIX = OFIELD + 5 * S           -- ARGV[PREFIX + j]: prune j's prefix
local OLDEST = PREFIX + P               -- ARGV[OLDEST + j]: prune j's oldest tile kept
local PRUNE_EVERY = 8
local HEADER, NEWEST = 3, 3  -- tile ms, tile index, newest event time (1-based slot 3)

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

-- HMGET and HSET in parts: Lua's unpack takes a few thousand values at most, and a
-- backfill chunk can touch thousands of one entity's tiles.
local PART = 1000  -- arguments per command (even: HSET's field/value pairs stay whole)
local function hmget(key, names)
  local out = {}
  for i = 1, #names, PART do
    local values = redis.call('HMGET', key, unpack(names, i, math.min(i + PART - 1, #names)))
    for j = 1, #values do out[i + j - 1] = values[j] end
  end
  return out
end

local function hset(key, fields_and_values)
  local n = #fields_and_values
  for i = 1, n, PART do
    redis.call('HSET', key, unpack(fields_and_values, i, math.min(i + PART - 1, n)))
  end
end

-- The new value of every field the key's segments above its marks touch (the tiles,
-- then the marks), as HSET arguments; whether a new tile calls for pruning; how many
-- segments were merged. Raises on a stored record that cannot be decoded.
local function merge_segments(seg, nseg, applied, fields, at, stored)
  -- Per field: its new value, as the record sent (a new tile of one segment: stored as
  -- sent) or decoded (merged).
  local raw, merged, written, created, newest = {}, {}, 0, false, {}
  for i = seg + 1, seg + nseg do
    local f = ARGV[OFIELD + i]
    if tonumber(ARGV[LO + i]) > applied[f] then
      local field, record = ARGV[FIELD + i], ARGV[RECORD + i]
      local j = at[field]
      local into = merged[j] or raw[j] or stored[j]
      if not into then
        raw[j] = record
        -- Pruning scans every field: amortise it over tiles (1 in PRUNE_EVERY new tiles).
        local index = tonumber(string.match(field, ',(-?%d+)$'))
        if index % PRUNE_EVERY == 0 then created = true end
      else
        if type(into) == 'string' then into = decode(into) end
        merged[j] = merge(into, decode(record))
      end
      local hi = tonumber(ARGV[HI + i])
      if newest[f] == nil or hi > newest[f] then newest[f] = hi end
      written = written + 1
    end
  end
  local out = {}
  for j, field in ipairs(fields) do
    out[#out + 1] = field
    if merged[j] then out[#out + 1] = encode(merged[j]) else out[#out + 1] = raw[j] end
  end
  for f, hi in pairs(newest) do
    out[#out + 1] = f
    out[#out + 1] = string.format('%d', hi)
  end
  return out, created, written
end

-- Key k's segments are seg + 1 .. seg + nseg, its prunes prune + 1 .. prune + nprune.
-- Three commands read and write a key whatever its segments (HMGET of the marks, HMGET
-- of the tiles, one HSET). Returns the segments applied, 0, -1 (above), or the message
-- "APPLY <k> ..." when a stored record cannot be merged. Redis' own refusals (OOM at
-- maxmemory) stop the script with their own error, which the client handles.
local function apply(k, key, seg, nseg, prune, nprune)
  local applied, ofields = {}, {}
  for i = seg + 1, seg + nseg do
    local f = ARGV[OFIELD + i]
    if applied[f] == nil then applied[f] = false; ofields[#ofields + 1] = f end
  end
  local marks = hmget(key, ofields)
  for j, f in ipairs(ofields) do applied[f] = tonumber(marks[j] or '-1') end
  local fields, at = {}, {}
  for i = seg + 1, seg + nseg do
    local f = ARGV[OFIELD + i]
    local lo, mark = tonumber(ARGV[LO + i]), applied[f]
    if lo <= mark and tonumber(ARGV[HI + i]) > mark then return -1 end
    local field = ARGV[FIELD + i]
    if lo > mark and at[field] == nil then fields[#fields + 1] = field; at[field] = #fields end
  end
  if #fields == 0 then return 0 end
  local stored = hmget(key, fields)
  local ok, out, created, written = pcall(merge_segments, seg, nseg, applied, fields, at,
                                          stored)
  if not ok then return 'APPLY ' .. k .. ' ' .. tostring(out) end
  hset(key, out)

  -- A new tile appeared (one in PRUNE_EVERY): drop tiles that fell out of their
  -- granularity's retention. Reads select tiles by window, so a tile kept a little
  -- longer changes no value; pruning only bounds the hash.
  if created and nprune > 0 then
    for _, field in ipairs(redis.call('HKEYS', key)) do
      for j = prune + 1, prune + nprune do
        local prefix = ARGV[PREFIX + j]
        if string.sub(field, 1, #prefix) == prefix then
          if tonumber(string.sub(field, #prefix + 1)) < tonumber(ARGV[OLDEST + j]) then
            redis.call('HDEL', key, field)
          end
        end
      end
    end
  end
  redis.call('PEXPIRE', key, ttl)
  return written
end

local results, seg, prune = {}, 0, 0
for k = 1, nkeys do
  local nseg, nprune = tonumber(ARGV[COUNTS + k]), tonumber(ARGV[PRUNES + k])
  local result = apply(k, KEYS[k], seg, nseg, prune, nprune)
  -- A stored record the script cannot merge: which key, for the client's message.
  if type(result) == 'string' then return redis.error_reply(result) end
  results[k] = result
  seg, prune = seg + nseg, prune + nprune
end
return results
