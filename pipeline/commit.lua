-- The identity store's one atomic gallery write (see pipeline/store.py for the keys and the protocol).
-- ARGV: prefix, expected gallery version, gallery log maxlen, retention seconds (0 = keep), expected store
-- generation ('' = do not check), lowest identity id a new identity may get minus one (the highest id the
-- caller has seen), ops as JSON, then the vector blobs the ops refer to by 1-based index into that tail
-- (0 = none).
-- Returns {1, new version, result per op}, {0, current version} (stale: structural op on an old version),
-- {-1, identity id} (an op names an identity that expired or was merged away) or {-2, current generation}
-- (the store is not the one the caller knew: it came back empty, or was reset).
local p = ARGV[1]
local expected = tonumber(ARGV[2])
local maxlen = ARGV[3]
local ttl = tonumber(ARGV[4])
local generation = ARGV[5]
local id_floor = tonumber(ARGV[6])
local ops = cjson.decode(ARGV[7])
local function blob(i) i = tonumber(i) if i == nil or i == 0 then return nil end return ARGV[7 + i] end
if generation ~= '' then
  local current = redis.call('GET', p .. ':generation')
  if current ~= generation then return {-2, current or ''} end
end
local version = tonumber(redis.call('GET', p .. ':gallery_version') or '0')
local structural = false
for _, op in ipairs(ops) do
  if op.op == 'create' or op.op == 'outfit' or op.op == 'merge' then structural = true end
end
if structural and version ~= expected then return {0, version} end
-- validate every target before the first write: a script is not rolled back on error
for _, op in ipairs(ops) do
  local ids = {}
  if op.op == 'merge' then ids = {op.keep, op.drop} elseif op.op ~= 'create' then ids = {op.id} end
  for _, id in ipairs(ids) do
    local h = p .. ':identity:' .. id
    if redis.call('EXISTS', h) == 0 or redis.call('HEXISTS', h, 'merged_into') == 1 then return {-1, tonumber(id)} end
  end
end
local function renew(id)
  if ttl > 0 then
    for _, k in ipairs({':identity:', ':protos:', ':looks:'}) do redis.call('EXPIRE', p .. k .. id, ttl) end
  end
end
local function log(fields)
  local args = {'XADD', p .. ':gallery_log', 'MAXLEN', '~', maxlen, '*'}
  for i = 1, #fields do args[#args + 1] = fields[i] end
  redis.call(unpack(args))
end
local function add_camera(h, camera)
  local cams = cjson.decode(redis.call('HGET', h, 'cameras') or '[]')
  for _, c in ipairs(cams) do if c == camera then return end end
  cams[#cams + 1] = camera
  table.sort(cams)
  redis.call('HSET', h, 'cameras', cjson.encode(cams))
end
local function seen(id, camera, ts, sighting)
  local h = p .. ':identity:' .. id
  if tonumber(redis.call('HGET', h, 'last_seen') or '0') < tonumber(ts) then
    redis.call('HSET', h, 'last_seen', ts, 'last_camera', camera)
  end
  add_camera(h, camera)
  if sighting then redis.call('HINCRBY', h, 'sightings', 1) end
end
local function link(tracklet, id)
  if tracklet and tracklet ~= '' then
    if ttl > 0 then redis.call('SET', p .. ':track:' .. tracklet, id, 'EX', ttl)
    else redis.call('SET', p .. ':track:' .. tracklet, id) end
  end
end
local function put(id, outfit, vec, look)
  if vec then redis.call('HSET', p .. ':protos:' .. id, outfit, vec) end
  if look then redis.call('HSET', p .. ':looks:' .. id, outfit, look) end
end
local function log_row(kind, id, outfit, op, vec, look)
  local f = {'op', kind, 'id', id, 'outfit', outfit, 'camera', op.camera or '', 'ts', op.ts or '0',
             'live', op.live or '0', 'version', version}
  if vec then f[#f + 1] = 'vec' f[#f + 1] = vec end
  if look then f[#f + 1] = 'look' f[#f + 1] = look end
  log(f)
end
-- Identity ids never repeat: a store that lost its counter (restored from an old snapshot, or empty) is
-- raised to the highest id the caller has seen before the first new id is drawn.
if id_floor > tonumber(redis.call('GET', p .. ':next_identity') or '0') then
  for _, op in ipairs(ops) do
    if op.op == 'create' then redis.call('SET', p .. ':next_identity', id_floor) break end
  end
end
local out = {1, 0}
for _, op in ipairs(ops) do
  local res = 0
  if op.op == 'create' then
    local id = tostring(redis.call('INCR', p .. ':next_identity'))
    version = version + 1
    redis.call('ZADD', p .. ':identities', op.ts, id)
    redis.call('HSET', p .. ':identity:' .. id, 'created', op.ts, 'last_seen', op.ts, 'last_camera', op.camera,
               'cameras', cjson.encode({op.camera}), 'sightings', 1, 'outfits', 1)
    put(id, '1', blob(op.vec), blob(op.look))
    link(op.tracklet, id)
    renew(id)
    log_row('create', id, '1', op, blob(op.vec), blob(op.look))
    res = tonumber(id)
  elseif op.op == 'outfit' then
    local outfit = tostring(redis.call('HINCRBY', p .. ':identity:' .. op.id, 'outfits', 1))
    version = version + 1
    put(op.id, outfit, blob(op.vec), blob(op.look))
    seen(op.id, op.camera, op.ts, op.sighting == '1')
    link(op.tracklet, op.id)
    renew(op.id)
    log_row('outfit', op.id, outfit, op, blob(op.vec), blob(op.look))
    res = tonumber(outfit)
  elseif op.op == 'update' then
    put(op.id, op.outfit, blob(op.vec), blob(op.look))
    seen(op.id, op.camera, op.ts, op.sighting == '1')
    link(op.tracklet, op.id)
    renew(op.id)
    log_row('update', op.id, op.outfit, op, blob(op.vec), blob(op.look))
  elseif op.op == 'presence' then
    seen(op.id, op.camera, op.ts, false)
    log_row('presence', op.id, '0', op, nil, nil)
  elseif op.op == 'merge' then
    -- the dropped identity's outfits become new outfits of the kept one; the dropped identity stays,
    -- marked merged_into, so old track links and events still resolve
    local keep, drop = op.keep, op.drop
    local kh, dh = p .. ':identity:' .. keep, p .. ':identity:' .. drop
    version = version + 1
    redis.call('HSET', dh, 'merged_into', keep)
    log({'op', 'merge', 'id', drop, 'into', keep, 'ts', op.ts, 'version', version})
    local protos = redis.call('HGETALL', p .. ':protos:' .. drop)
    local looks = redis.call('HGETALL', p .. ':looks:' .. drop)
    local look_of = {}
    for i = 1, #looks, 2 do look_of[looks[i]] = looks[i + 1] end
    for i = 1, #protos, 2 do
      local outfit = tostring(redis.call('HINCRBY', kh, 'outfits', 1))
      redis.call('HINCRBY', kh, 'merged_outfits', 1)  -- outfits that came with a merge, not outfit changes
      put(keep, outfit, protos[i + 1], look_of[protos[i]])
      log_row('outfit', keep, outfit, {camera = '', ts = op.ts}, protos[i + 1], look_of[protos[i]])
      res = res + 1
    end
    redis.call('HINCRBY', kh, 'sightings', tonumber(redis.call('HGET', dh, 'sightings') or '0'))
    for _, c in ipairs(cjson.decode(redis.call('HGET', dh, 'cameras') or '[]')) do add_camera(kh, c) end
    local dc = tonumber(redis.call('HGET', dh, 'created') or op.ts)
    if dc < tonumber(redis.call('HGET', kh, 'created')) then
      redis.call('HSET', kh, 'created', dc)
      redis.call('ZADD', p .. ':identities', dc, keep)
    end
    local dl = tonumber(redis.call('HGET', dh, 'last_seen') or '0')
    if dl > tonumber(redis.call('HGET', kh, 'last_seen') or '0') then
      redis.call('HSET', kh, 'last_seen', dl, 'last_camera', redis.call('HGET', dh, 'last_camera') or '')
    end
    renew(keep)
    renew(drop)
  end
  out[#out + 1] = res
end
redis.call('SET', p .. ':gallery_version', version)
out[2] = version
return out
