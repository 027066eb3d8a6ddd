-- The program table's atomic operations (autellix/proxy/programs/rules.py, rules 1-7).
--
-- Functions only: redis_table.py prepends them to a short "glue" body per script. Each function
-- touches either ONE program key (prog_*) or the fleet keys that share the hash tag {<prefix>}
-- (fleet_*). A standalone Redis runs one glue script per operation that calls both halves (one
-- round trip); a Redis Cluster runs the two halves as two scripts, each inside one slot.
--
-- Program hash fields: created plas atlas wait pin larr ldone started completed failed ptok ctok otok,
-- and one field "c:<call id>" per in-flight call holding a JSON array of strings:
-- [has_thread "1"/"0", thread, engine, arrival, index, plas_at_arrival, atlas_at_arrival, tokens, replica].
-- Numbers are written with %.17g so that every double survives the round trip exactly.

local function fmt(x)
  return string.format('%.17g', x)
end

local function num(s)
  if not s then return 0 end
  return tonumber(s)
end

-- length-prefixed, so that no character of a program or call id can make two members collide
local function member(pid, call)
  return #pid .. ':' .. pid .. call
end

-- (engine, replica, call id) of every in-flight call in a flat HGETALL reply
local function calls_in(flat)
  local out = {}
  for i = 1, #flat, 2 do
    local field = flat[i]
    if string.sub(field, 1, 2) == 'c:' then
      local rec = cjson.decode(flat[i + 1])
      table.insert(out, {rec[3], rec[9], string.sub(field, 3)})
    end
  end
  return out
end

-- Rules 1-3. A: now call engine has_thread thread tokens pin replica key_ttl_ms
local function prog_start(pkey, now_s, call, engine, has_thread, thread, tokens, pin, rid, key_ttl_ms)
  local cfield = 'c:' .. call
  local f = redis.call('HMGET', pkey, 'created', 'plas', 'atlas', 'wait', 'pin', 'started', 'completed', cfield)
  local pinned = f[5] or ''
  local completed = num(f[7])
  if f[8] then
    local rec = cjson.decode(f[8])
    return {0, rec[3], 0, pinned, rec[6], rec[7], f[4] or '0', tonumber(rec[5]), completed}
  end
  local plas, atlas, wait = f[2] or '0', f[3] or '0', f[4] or '0'
  local started = num(f[6])
  local final = engine
  local pin_created = 0
  if pin == '1' then
    if pinned == '' then
      pinned = engine
      pin_created = 1
    else
      final = pinned
    end
  end
  local rec = cjson.encode({has_thread, thread, final, now_s, tostring(started), plas, atlas, tokens, rid})
  local args = {'larr', now_s, 'started', tostring(started + 1), cfield, rec}
  if not f[1] then
    table.insert(args, 'created')
    table.insert(args, now_s)
  end
  if pin_created == 1 then
    table.insert(args, 'pin')
    table.insert(args, final)
  end
  redis.call('HSET', pkey, unpack(args))
  redis.call('PEXPIRE', pkey, key_ttl_ms)
  return {1, final, pin_created, pinned, plas, atlas, wait, started, completed}
end

-- Rule 6 for a start: count the call on its engine, in the fleet total and under its replica.
-- K: agg rloads calls lease replicas activity
local function fleet_start(K, acquired, final, mem, pid, now_s, rid, lease_ms, key_ttl_ms)
  redis.call('SET', K[4], '1', 'PX', lease_ms)
  redis.call('SADD', K[5], rid)
  if tonumber(acquired) == 1 then
    redis.call('HINCRBY', K[1], final, 1)
    redis.call('HINCRBY', K[2], final, 1)
    redis.call('SADD', K[3], mem)
    redis.call('ZADD', K[6], 'GT', now_s, pid)
  end
  for i = 1, 6 do
    if i ~= 4 then redis.call('PEXPIRE', K[i], key_ttl_ms) end
  end
  return redis.call('HGETALL', K[1])
end

-- Rules 4-5 (measurements arrive sanitised). Returns nil when the call is not in flight, else
-- {engine, replica, hash after (or before deletion when end_after), ended, other released calls,
-- plas after, wait after}. With brief == '1' the hash is read only when the program ends ({} otherwise).
local function prog_finish(pkey, call, now_s, exec_s, wait_s, ok, ptok, ctok, otok, end_after, key_ttl_ms, brief)
  local cfield = 'c:' .. call
  local raw = redis.call('HGET', pkey, cfield)
  if not raw then return nil end
  local rec = cjson.decode(raw)
  local f = redis.call('HMGET', pkey, 'plas', 'atlas', 'wait', 'completed', 'failed', 'ptok', 'ctok', 'otok')
  local exec = tonumber(exec_s)
  local failed = num(f[5])
  if ok ~= '1' then failed = failed + 1 end
  local plas, wait = fmt(num(f[1]) + exec), fmt(num(f[3]) + tonumber(wait_s))
  redis.call('HSET', pkey,
    'plas', plas,
    'atlas', fmt(math.max(num(f[2]), tonumber(rec[7]) + exec)),
    'wait', wait,
    'ldone', now_s,
    'completed', tostring(num(f[4]) + 1),
    'failed', tostring(failed),
    'ptok', tostring(num(f[6]) + tonumber(ptok)),
    'ctok', tostring(num(f[7]) + tonumber(ctok)),
    'otok', tostring(num(f[8]) + tonumber(otok)))
  redis.call('HDEL', pkey, cfield)
  if end_after == '1' then
    local flat = redis.call('HGETALL', pkey)
    redis.call('DEL', pkey)
    return {rec[3], rec[9], flat, 1, calls_in(flat), plas, wait}
  end
  local flat = {}
  if brief ~= '1' then flat = redis.call('HGETALL', pkey) end
  redis.call('PEXPIRE', pkey, key_ttl_ms)
  return {rec[3], rec[9], flat, 0, {}, plas, wait}
end

-- Rule 6 for calls that leave the in-flight set. A replica's own count is decremented first; the
-- fleet total follows only if that count was positive, so that calls already released by the dead
-- replica clean-up (fleet_gc) are never subtracted twice. K: agg activity
local function fleet_release(K, fleet, pid, releases, ended, now_s, key_ttl_ms)
  for _, r in ipairs(releases) do
    local engine, rid, call = r[1], r[2], r[3]
    local rloads = fleet .. ':rloads:' .. rid
    local left = redis.call('HINCRBY', rloads, engine, -1)
    if left <= 0 then redis.call('HDEL', rloads, engine) end
    if left >= 0 then
      if redis.call('HINCRBY', K[1], engine, -1) <= 0 then redis.call('HDEL', K[1], engine) end
    end
    redis.call('SREM', fleet .. ':calls:' .. rid, member(pid, call))
  end
  if tonumber(ended) == 1 then
    redis.call('ZREM', K[2], pid)
  else
    redis.call('ZADD', K[2], 'GT', now_s, pid)
    redis.call('PEXPIRE', K[2], key_ttl_ms)
  end
  return 1
end

-- Explicit end: the whole hash (nil if unknown), deleted.
local function prog_end(pkey)
  local flat = redis.call('HGETALL', pkey)
  if #flat == 0 then return nil end
  redis.call('DEL', pkey)
  return flat
end

-- Rule 7, decided here from the stored last activity. {0} alive, {1, hash} expired (deleted), {2} gone.
local function prog_expire(pkey, now_s, idle_s, stuck_s)
  local flat = redis.call('HGETALL', pkey)
  if #flat == 0 then return {2} end
  local h = {}
  local busy = false
  for i = 1, #flat, 2 do
    h[flat[i]] = flat[i + 1]
    if string.sub(flat[i], 1, 2) == 'c:' then busy = true end
  end
  local last = num(h['created'])
  if h['larr'] and tonumber(h['larr']) > last then last = tonumber(h['larr']) end
  if h['ldone'] and tonumber(h['ldone']) > last then last = tonumber(h['ldone']) end
  local ttl = tonumber(idle_s)
  if busy then ttl = tonumber(stuck_s) end
  if tonumber(now_s) - last > ttl then
    redis.call('DEL', pkey)
    return {1, flat}
  end
  return {0}
end

local function prog_create(pkey, now_s, key_ttl_ms)
  local created = redis.call('HSETNX', pkey, 'created', now_s)
  redis.call('PEXPIRE', pkey, key_ttl_ms)
  return created
end

-- Replicas whose lease expired: subtract their counts from the fleet total, forget them, and return
-- their in-flight calls (members) so that the caller drops them from their programs. Then the
-- programs whose last activity is at or before the cutoff (candidates for expiry).
-- K: replicas agg activity
local function fleet_gc(K, fleet, cutoff_s)
  local orphans = {}
  for _, rid in ipairs(redis.call('SMEMBERS', K[1])) do
    if redis.call('EXISTS', fleet .. ':lease:' .. rid) == 0 then
      local rloads = fleet .. ':rloads:' .. rid
      local counts = redis.call('HGETALL', rloads)
      for i = 1, #counts, 2 do
        if redis.call('HINCRBY', K[2], counts[i], -tonumber(counts[i + 1])) <= 0 then
          redis.call('HDEL', K[2], counts[i])
        end
      end
      local calls = fleet .. ':calls:' .. rid
      for _, m in ipairs(redis.call('SMEMBERS', calls)) do
        table.insert(orphans, {rid, m})
      end
      redis.call('DEL', rloads, calls)
      redis.call('SREM', K[1], rid)
    end
  end
  return {orphans, redis.call('ZRANGEBYSCORE', K[3], '-inf', cutoff_s)}
end

-- An orphan of a dead replica leaves its program's in-flight set (its counts are already gone).
local function prog_drop(pkey, call, rid)
  local raw = redis.call('HGET', pkey, 'c:' .. call)
  if not raw then return 0 end
  if cjson.decode(raw)[9] ~= rid then return 0 end
  return redis.call('HDEL', pkey, 'c:' .. call)
end
