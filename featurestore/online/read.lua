-- Read ONE entity hash's tiles as CSV lines "<row>,<tile ms>,<tile index>,<record>".
-- KEYS[1] the entity hash; ARGV[1] the row this key answers in the caller's request.
-- One bulk string per key keeps the reply compact: parsing many small fields in the
-- client is what costs (DESIGN.md, measured facts). Offset fields ("o:...") are skipped.
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local field = all[i]
  if string.byte(field, 1) ~= 111 then
    out[#out + 1] = ARGV[1] .. ',' .. string.gsub(field, ':', ',', 1) .. ',' .. all[i + 1] .. '\n'
  end
end
return table.concat(out)
