"""The Lua scripts of the Redis history store (see :mod:`wxhelper.storage.redis` for the layout).

A record is one member of its user's sorted set, scored by its timestamp::

    <seq: 16 hex digits><chars>,<score>,<bytes of message_id>:<message_id><JSON payload>

``seq`` is a per-history insertion counter, so members of equal timestamp sort in
insertion order (as SQLite's ``ORDER BY timestamp DESC, id DESC``); ``chars`` is
the content's length in code points (Python's ``len``), which Lua cannot count.

The read script computes the fair selection server-side with exactly the
arithmetic of :mod:`wxhelper.fairness` (doubles, + - * / sqrt, the same tie
order) and fetches each user's records lazily, so its cost grows with the
records returned and the users considered, never with what is stored. It builds
the per-user key names itself from the history's hash tag and ``redis.sha1hex``
of the user id: all of them are in the history's Cluster slot.
"""

COMMON = r"""
local function parse(m)
  local a = string.find(m, ',', 17, true)
  local b = string.find(m, ',', a + 1, true)
  local c = string.find(m, ':', b + 1, true)
  local ml = tonumber(string.sub(m, b + 1, c - 1))
  return tonumber(string.sub(m, 17, a - 1)), tonumber(string.sub(m, a + 1, b - 1)) or 0,
         string.sub(m, c + 1, c + ml), c + ml + 1
end
"""

APPEND_FN = r"""
-- the expiry of a history's keys, from its last write
local function expire_history(meta, users, oldest, mids, head, ttl)
  redis.call('PEXPIRE', head, ttl)
  redis.call('PEXPIRE', meta, ttl)
  redis.call('PEXPIRE', users, ttl)
  redis.call('PEXPIRE', oldest, ttl)
  redis.call('PEXPIRE', mids, ttl)
end
-- append one record; returns 1 (stored) or 0 (duplicate message id). With defer, the caller sets the
-- expiries once after all its records (the same expiries: a script's writes are one instant)
local function append(meta, users, oldest, mids, head, ukey, uid, ts, mid, rest, keep, ttl, hid, defer)
  if redis.call('ZSCORE', mids, mid) then return 0 end
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  if seq == 1 then redis.call('HSET', meta, 'id', hid) end
  redis.call('ZADD', ukey, ts, string.format('%016x', seq) .. rest)
  redis.call('ZADD', mids, ts, mid)
  redis.call('ZADD', users, 'GT', ts, uid)
  local n = redis.call('ZCARD', ukey)
  if n > keep then
    local old = redis.call('ZRANGE', ukey, 0, n - keep - 1)
    for i = 1, #old do
      local _, _, omid = parse(old[i])
      redis.call('ZREM', mids, omid)
    end
    redis.call('ZREMRANGEBYRANK', ukey, 0, n - keep - 1)
  end
  local first = redis.call('ZRANGE', ukey, 0, 0, 'WITHSCORES')
  if first[2] then redis.call('ZADD', oldest, first[2], uid) else redis.call('ZREM', oldest, uid) end
  local top = redis.call('ZREVRANGE', ukey, 0, 0, 'WITHSCORES')
  if top[2] then
    -- a space after the timestamp: this is the user's only record (until the next append rewrites the
    -- head, the set can only shrink), so a read need not look for more; tonumber reads past it
    local mark = '|'
    if n == 1 or (n > keep and keep == 1) then mark = ' |' end
    redis.call('HSET', head, uid, top[2] .. mark .. top[1])
  else
    redis.call('HDEL', head, uid)
  end
  if defer then return 1 end
  expire_history(meta, users, oldest, mids, head, ttl)
  redis.call('PEXPIRE', ukey, ttl)
  return 1
end
-- several records of one history in order (the expiries once, when the ttl is positive: a ttl <= 0
-- deletes the keys, which the next record must see); returns the stored flags appended to out
local function append_all(out, meta, users, oldest, mids, head, ukp, keep, ttl, hid, args, pos, n)
  local defer = (tonumber(ttl) or 0) > 0
  local ukeys, nk, seen = {}, 0, {}
  for r = 1, n do
    local uid = args[pos]
    local ukey = ukp .. redis.sha1hex(uid)
    local stored = append(meta, users, oldest, mids, head, ukey, uid, args[pos + 1], args[pos + 2], args[pos + 3],
                          keep, ttl, hid, defer)
    out[#out + 1] = stored
    if stored == 1 and defer and not seen[ukey] then
      seen[ukey] = true
      nk = nk + 1
      ukeys[nk] = ukey
    end
    pos = pos + 4
  end
  if nk > 0 then
    expire_history(meta, users, oldest, mids, head, ttl)
    for x = 1, nk do redis.call('PEXPIRE', ukeys[x], ttl) end
  end
  return pos
end
-- 1 while the history is not yet in the registry (the caller adds it there, then sets 'reg')
local function unregistered(meta)
  if redis.call('HGET', meta, 'reg') then return 0 end
  return 1
end
"""

APPEND = COMMON + APPEND_FN + r"""
-- KEYS: 1 meta hash, 2 users zset (user -> last active), 3 oldest zset (user -> oldest record),
--       4 mids zset (message_id -> timestamp), 5 head hash (user -> "<ts>|<newest member>"),
--       6 the user's records zset
-- ARGV: 1 user_id, 2 timestamp, 3 message_id, 4 member without seq, 5 max_per_user, 6 ttl ms, 7 history id
local stored = append(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                     tonumber(ARGV[5]), ARGV[6], ARGV[7])
return {stored, unregistered(KEYS[1])}
"""

APPEND_MANY = COMMON + APPEND_FN + r"""
-- bulk append (loads, migration), in order. KEYS: 1 meta, 2 users, 3 oldest, 4 mids, 5 head
-- ARGV: 1 user key prefix, 2 max_per_user, 3 ttl ms, 4 history id, then per record:
--       user_id, timestamp, message_id, member without seq
local out = {}
append_all(out, KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV, 5,
           math.ceil((#ARGV - 4) / 4))
out[#out + 1] = unregistered(KEYS[1])
return out
"""

READ_BODY = r"""
-- KEYS: 1 users zset, 2 head hash
-- ARGV: 1 user key prefix, 2 algorithm (or '__candidates__'), 3 max_records, 4 max_chars,
--       5 since, 6 time-decay scale, 7.. user, weight pairs
-- Every step runs in the Lua interpreter, so the state of a user is held in parallel arrays indexed by
-- the user's rank (no table per user), a user's newest record is kept as the head hash gave it (no
-- table per user either), and scores are asked of Redis only by the algorithms that read them (Redis
-- formats every score it returns with printf, ~1 us each).
local ukp, algo = ARGV[1], ARGV[2]
local M, C, since, scale = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local find, sub, byte, call, sha1 = string.find, string.sub, string.byte, redis.call, redis.sha1hex

local function bytelt(a, b)
  local la, lb = #a, #b
  local n = la
  if lb < n then n = lb end
  for i = 1, n do
    local x, y = byte(a, i), byte(b, i)
    if x ~= y then return x < y end
  end
  return la < lb
end

-- the M most recently active users (ties: user id ascending, byte order = code point order)
local raw = call('ZREVRANGEBYSCORE', KEYS[1], '+inf', since, 'WITHSCORES', 'LIMIT', 0, M)
local users, scores, nu = {}, {}, 0
local nraw = #raw
local i = 1
while i <= nraw do
  local s = raw[i + 1]
  local j = i
  while j + 2 <= nraw and raw[j + 3] == s do j = j + 2 end
  for g = j, i, -2 do nu = nu + 1; users[nu] = raw[g]; scores[nu] = s end
  i = j + 2
end
if nu == M and M > 0 then
  local s = scores[M]
  local have = 0
  for x = 1, M do if scores[x] == s then have = have + 1 end end
  if call('ZCOUNT', KEYS[1], s, s) > have then
    for x = M, M - have + 1, -1 do users[x] = nil; scores[x] = nil end
    nu = M - have
    local tied = call('ZRANGEBYSCORE', KEYS[1], s, s, 'LIMIT', 0, have)
    for x = 1, #tied do nu = nu + 1; users[nu] = tied[x]; scores[nu] = s end
  end
end

local decay = (algo == 'time_decay' or algo == 'hybrid') and scale and scale > 0
-- a fetched record is a member (st 1) or a member and its score (st 2: the algorithms that read timestamps)
local st = 1
if algo == 'seed' or decay then st = 2 end

-- the candidates, by rank: id, last activity, the head's member and timestamp (or false), records
-- fetched after the head (lazily; false until the first fetch), how many are known, whether that is all
local cid, clast, chm, chts, coff, crec, cn, cdone, ckey = {}, {}, {}, {}, {}, {}, {}, {}, {}
local nc = 0

local function fetch(r, cnt)
  local key = ckey[r]
  if not key then
    key = ukp .. sha1(cid[r])
    ckey[r] = key
  end
  local n = cn[r]
  local res
  if st == 2 then
    res = call('ZREVRANGEBYSCORE', key, '+inf', since, 'WITHSCORES', 'LIMIT', n, cnt)
  else
    res = call('ZREVRANGEBYSCORE', key, '+inf', since, 'LIMIT', n, cnt)
  end
  local got = #res
  local rec = crec[r]
  if rec then
    local m = #rec
    for x = 1, got do rec[m + x] = res[x] end
  else
    crec[r] = res
  end
  cn[r] = n + got / st
  if got < st * cnt then cdone[r] = true end
end
local function member(r, k)
  local off = coff[r]
  if k <= off then return chm[r] end
  return crec[r][st * (k - off - 1) + 1]
end
local function stamp(r, k)
  local off = coff[r]
  if k <= off then return chts[r] end
  return crec[r][st * (k - off)]
end

local first = M
if nu > 0 then first = math.min(M, math.ceil(M / nu)) end
if algo == '__candidates__' then first = M end
local heads = {}
local nsince = tonumber(since)
for x = 1, nu, 1000 do
  local got = call('HMGET', KEYS[2], unpack(users, x, math.min(nu, x + 999)))
  for y = 1, #got do heads[x + y - 1] = got[y] end
end
for x = 1, nu do
  local h = heads[x]
  local r = nc + 1
  if h then
    local bar = find(h, '|', 1, true)
    local ts = sub(h, 1, bar - 1)
    if tonumber(ts) >= nsince then
      -- a space before the bar: the head is the user's only record (written so by the append script;
      -- heads written before it have none, and their users are read as before)
      local only = byte(h, bar - 1) == 32
      cid[r], clast[r], chm[r], chts[r], coff[r], crec[r], cn[r], cdone[r], ckey[r] =
        users[x], scores[x], sub(h, bar + 1), ts, 1, false, 1, only, false
      nc = r
      if first > 1 and not only then fetch(r, first - 1) end
    end
  else
    cid[r], clast[r], chm[r], chts[r], coff[r], crec[r], cn[r], cdone[r], ckey[r] =
      users[x], scores[x], false, false, 0, false, 0, false, false
    fetch(r, first)
    if cn[r] > 0 then nc = r end
  end
end

if algo == '__candidates__' then
  local out = {}
  for r = 1, nc do
    local row = {cid[r], clast[r]}
    if coff[r] == 1 then row[3] = chm[r] end
    local rec = crec[r]
    if rec then
      local p = #row
      for x = 1, #rec do row[p + x] = rec[x] end
    end
    out[r] = row
  end
  return out
end

local out = {}
if nc == 0 then return out end

if algo == 'seed' then
  local q = math.max(1, math.floor(M / nc))
  local chosen = {}
  for r = 1, nc do
    if cn[r] < q and not cdone[r] then fetch(r, q - cn[r]) end
    for k = 1, math.min(q, cn[r]) do chosen[#chosen + 1] = {tonumber(stamp(r, k)), cid[r], member(r, k)} end
  end
  table.sort(chosen, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    if a[2] ~= b[2] then return bytelt(b[2], a[2]) end
    local _, _, ma = parse(a[3])
    local _, _, mb = parse(b[3])
    return bytelt(mb, ma)
  end)
  local total = 0
  for x = 1, math.min(M, #chosen) do
    local m = chosen[x][3]
    local n = tonumber(sub(m, 17, find(m, ',', 17, true) - 1))
    if total + n > C then break end
    total = total + n
    out[#out + 1] = m
  end
  return out
end

local quality = (algo == 'quality' or algo == 'hybrid')
local weighted = (algo == 'weighted' or algo == 'hybrid')
local weights = {}
if weighted then for a = 7, #ARGV, 2 do weights[ARGV[a]] = tonumber(ARGV[a + 1]) end end
local tref = 0
if decay then
  tref = tonumber(stamp(1, 1))
  for r = 2, nc do
    local t = tonumber(stamp(r, 1))
    if t > tref then tref = t end
  end
end

-- a binary min-heap of events (level, id = rank * (M + 1) + k, chars or -1 for a placeholder),
-- in three parallel arrays: no table per event
local hl, hi, hc, hn = {}, {}, {}, 0
local mult = M + 1
local function push(level, id, ch)
  hn = hn + 1
  local n = hn
  while n > 1 do
    local p = (n - n % 2) / 2
    local lp = hl[p]
    if level < lp or (level == lp and id < hi[p]) then
      hl[n], hi[n], hc[n] = lp, hi[p], hc[p]
      n = p
    else
      break
    end
  end
  hl[n], hi[n], hc[n] = level, id, ch
end

-- a candidate's progress: records taken (k), their characters, quality sum, last level, time factor, weight
local ck, ccum, cqsum, cprev, cf, cw = {}, {}, {}, {}, {}, {}
-- every candidate's first event (level, chars), by rank: in rank order, so in id order
local il, ic = {}, {}
-- events made during the selection wait in a list (ql, qi, qc; the least is qml, qmi) and go to the
-- heap only when the least of them could be next (most never do: pushing them would cost a sift each)
local ql, qi, qc, qn, qml, qmi = {}, {}, {}, 0, 0, 0

-- The next event of a user (k >= 2), into the waiting list. When its record is not fetched yet (and
-- the level is a monotone function of the record: not for quality), a placeholder at a lower bound of
-- its level instead; the record is fetched only if the placeholder comes first (then the real event
-- is made: it sorts after the placeholder, so the order is exactly the full sort's). The list, the
-- first events and the heap are one priority queue: what comes next is the least of the three.
local lazy = not quality
local function advance(r, fetched)
  local k = ck[r] + 1
  if k > M then return end
  if k > cn[r] then
    if cdone[r] then return end
    if lazy and not fetched then
      local lb, b = k / M, ccum[r] / C
      if b > lb then lb = b end
      lb = lb * cf[r] / cw[r]
      if lb < cprev[r] then lb = cprev[r] end
      local id = r * mult + k
      if qn == 0 or lb < qml or (lb == qml and id < qmi) then qml, qmi = lb, id end
      qn = qn + 1
      ql[qn], qi[qn], qc[qn] = lb, id, -1
      return
    end
    local n = cn[r]
    if n < 4 then n = 4 end
    fetch(r, n)
    if k > cn[r] then return end
  end
  ck[r] = k
  local off = coff[r]
  local m
  if k <= off then m = chm[r] else m = crec[r][st * (k - off - 1) + 1] end
  local a = find(m, ',', 17, true)
  local ch = tonumber(sub(m, 17, a - 1))
  local cum = ccum[r] + ch
  ccum[r] = cum
  local base, b = k / M, cum / C
  if b > base then base = b end
  local factor = 1.0
  if decay then
    local t
    if k <= off then t = chts[r] else t = crec[r][st * (k - off)] end
    factor = 1.0 + (tref - tonumber(t)) / scale
  end
  cf[r] = factor
  if quality then
    local e = find(m, ',', a + 1, true)
    local q = tonumber(sub(m, a + 1, e - 1)) or 0
    local v = 1.0
    if q > 0 then v = 1.0 + math.sqrt(q) end
    local qs = cqsum[r] + v
    cqsum[r] = qs
    factor = factor * (k / qs)
  end
  local level = base * factor / cw[r]
  if level < cprev[r] then level = cprev[r] end
  cprev[r] = level
  local id = r * mult + k
  if qn == 0 or level < qml or (level == qml and id < qmi) then qml, qmi = level, id end
  qn = qn + 1
  ql[qn], qi[qn], qc[qn] = level, id, ch
end

-- every candidate's first event (advance's arithmetic for k = 1: the record is known, 1 <= M)
if M >= 1 then
  for r = 1, nc do
    local w = 1.0
    if weighted then
      w = weights[cid[r]] or 1.0
      if not (w > 0) then w = 1.0 end
    end
    local m
    if coff[r] == 1 then m = chm[r] else m = crec[r][1] end
    local a = find(m, ',', 17, true)
    local ch = tonumber(sub(m, 17, a - 1))
    local cum = 0 + ch
    local base, b = 1 / M, cum / C
    if b > base then base = b end
    local factor = 1.0
    if decay then
      local t
      if coff[r] == 1 then t = chts[r] else t = crec[r][st] end
      factor = 1.0 + (tref - tonumber(t)) / scale
    end
    local f, qs = factor, 0.0
    if quality then
      local e = find(m, ',', a + 1, true)
      local q = tonumber(sub(m, a + 1, e - 1)) or 0
      local v = 1.0
      if q > 0 then v = 1.0 + math.sqrt(q) end
      qs = 0.0 + v
      factor = factor * (1 / qs)
    end
    local level = base * factor / w
    if level < 0.0 then level = 0.0 end
    ck[r], ccum[r], cqsum[r], cprev[r], cf[r], cw[r] = 1, cum, qs, level, f, w
    il[r], ic[r] = level, ch
  end
end
-- The first events are taken from their list while it is in (level, id) order (the usual case: the
-- first records' levels are all 1 / M), merged with the heap of the later events; else all go to the heap.
local ip = nc + 1
if M >= 1 then
  ip = 1
  for r = 2, nc do
    if not (il[r] >= il[r - 1]) then ip = nc + 1; break end
  end
  if ip > nc then
    for r = 1, nc do push(il[r], r * mult + 1, ic[r]) end
  end
end
local taken, chars = 0, 0
while taken < M do
  if qn > 0 then  -- the pending events go to the heap when their least is before the list's and the heap's next
    local due = true
    if ip <= nc then
      local l = il[ip]
      if l < qml or (l == qml and ip * mult + 1 < qmi) then due = false end
    end
    if due and hn > 0 then
      local l = hl[1]
      if l < qml or (l == qml and hi[1] < qmi) then due = false end
    end
    if due then
      for x = 1, qn do push(ql[x], qi[x], qc[x]) end
      qn = 0
    end
  end
  local id, ch
  if ip <= nc and (hn == 0 or il[ip] < hl[1] or (il[ip] == hl[1] and ip * mult + 1 < hi[1])) then
    id, ch = ip * mult + 1, ic[ip]
    ip = ip + 1
  elseif hn == 0 then
    break
  else
  -- pop the lowest event (the last one sifts down from the top)
  id, ch = hi[1], hc[1]
  local ll, li, lc = hl[hn], hi[hn], hc[hn]
  hl[hn], hi[hn], hc[hn] = nil, nil, nil
  hn = hn - 1
  if hn > 0 then
    local x = 1
    while true do
      local l = 2 * x
      if l > hn then break end
      local s = l
      local r = l + 1
      if r <= hn and (hl[r] < hl[l] or (hl[r] == hl[l] and hi[r] < hi[l])) then s = r end
      local sl = hl[s]
      if sl < ll or (sl == ll and hi[s] < li) then
        hl[x], hi[x], hc[x] = sl, hi[s], hc[s]
        x = s
      else
        break
      end
    end
    hl[x], hi[x], hc[x] = ll, li, lc
  end
  end
  local k = id % mult
  local r = (id - k) / mult
  if ch < 0 then
    advance(r, true)
  elseif chars + ch <= C then
    taken = taken + 1
    chars = chars + ch
    local off = coff[r]
    if k <= off then out[taken] = chm[r] else out[taken] = crec[r][st * (k - off - 1) + 1] end
    advance(r, false)
  end
end
return out
"""

READ = COMMON + READ_BODY

FAIR_MANY_FN = "local function fair(KEYS, ARGV)\n" + READ_BODY + r"""
end
-- several fair reads: KEYS from index k0 + 1 on (users, head of each read in turn), ARGV from index a0 on
-- (the number of reads, then per read: its ARGV count, its ARGV)
local function fair_many(KEYS, ARGV, k0, a0)
  local out = {}
  local pos = a0 + 1
  for r = 1, tonumber(ARGV[a0]) do
    local c = tonumber(ARGV[pos])
    local args = {}
    for x = 1, c do args[x] = ARGV[pos + x] end
    pos = pos + c + 1
    out[r] = fair({KEYS[k0 + 2 * r - 1], KEYS[k0 + 2 * r]}, args)
  end
  return out
end
"""

READ_MANY = COMMON + FAIR_MANY_FN + r"""
-- several fair reads in one call (not on Cluster: their histories live in different slots)
-- KEYS: users, head of each read in turn ; ARGV: 1 number of reads, then per read: its ARGV count, its ARGV
return fair_many(KEYS, ARGV, 0, 1)
"""

PURGE = r"""
-- KEYS: 1 meta, 2 users, 3 oldest, 4 mids, 5 head ; ARGV: 1 user key prefix, 2 before
local before = '(' .. ARGV[2]
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', before)
for i = 1, #stale do
  local key = ARGV[1] .. redis.sha1hex(stale[i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', before)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', KEYS[3], first[2], stale[i])
  else
    redis.call('ZREM', KEYS[3], stale[i])
    redis.call('HDEL', KEYS[5], stale[i])
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', before)
local n = redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', before)
if redis.call('EXISTS', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[5])
  return {n, 1}
end
return {n, 0}
"""

CLEAR = r"""
-- KEYS: 1 meta, 2 users, 3 oldest, 4 mids, 5 head ; ARGV: 1 user key prefix
for z = 2, 3 do
  local users = redis.call('ZRANGE', KEYS[z], 0, -1)
  for i = 1, #users do redis.call('DEL', ARGV[1] .. redis.sha1hex(users[i])) end
end
local n = redis.call('ZCARD', KEYS[4])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return n
"""

# -- the crash-safe inbox, leases (all keys of the inbox share the hash tag {inbox}) ------------------

INBOX_PUT = r"""
-- KEYS: 1 payloads hash, 2 replies-in-progress hash, 3 order zset, 4 seq counter
-- ARGV: 1 field (JSON [bot_id, message_id]), 2 payload
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local reply = redis.call('HGET', KEYS[2], ARGV[1])
  if reply then return {1, reply} end
  return {1}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[1])
return {0}
"""

INBOX_ANSWER = r"""
-- KEYS: 1 payloads, 2 replies-in-progress ; ARGV: 1 field, 2 reply
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) end
return 1
"""

INBOX_COMPLETE = r"""
-- KEYS: 1 payloads, 2 replies-in-progress, 3 order, 4 the final reply's key
-- ARGV: 1 field, 2 reply, 3 expires (epoch ms)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if tonumber(ARGV[3]) > now then redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PXAT', ARGV[3]) end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

INBOX_PENDING = r"""
-- KEYS: 1 payloads, 2 replies-in-progress, 3 order
local fields = redis.call('ZRANGE', KEYS[3], 0, -1)
local out = {}
for i = 1, #fields do
  local payload = redis.call('HGET', KEYS[1], fields[i])
  if payload then
    local reply = redis.call('HGET', KEYS[2], fields[i])
    out[#out + 1] = {fields[i], payload, reply or ''}
    if not reply then out[#out][3] = false end
  end
end
return out
"""

LEASE_ACQUIRE = r"""
-- KEYS: 1 the lease hash (token, expires ms, held) ; ARGV: 1 ttl ms. Server time, so hosts agree.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'token', 'expires', 'held')
if cur[3] == '1' and tonumber(cur[2]) > now then return false end
local token = (tonumber(cur[1]) or 0) + 1
redis.call('HSET', KEYS[1], 'token', token, 'expires', now + tonumber(ARGV[1]), 'held', 1)
return token
"""

LEASE_RENEW = r"""
-- KEYS: 1 the lease ; ARGV: 1 token, 2 ttl ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HMGET', KEYS[1], 'token', 'expires', 'held')
if cur[1] == ARGV[1] and cur[3] == '1' and tonumber(cur[2]) > now then
  redis.call('HSET', KEYS[1], 'expires', now + tonumber(ARGV[2]))
  return 1
end
return 0
"""

LEASE_RELEASE = r"""
-- KEYS: 1 the lease ; ARGV: 1 token
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then redis.call('HSET', KEYS[1], 'held', 0) end
return 1
"""


# -- a message's turn in one call each (not on Cluster: the lease, the inbox and the histories
#    live in different slots); see wxhelper.storage.turns ------------------------------------------

LEASE_FN = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

BEGIN_TURN = COMMON + FAIR_MANY_FN + LEASE_FN + r"""
-- KEYS: 1 the lease, 2 the final reply's key, 3 payloads, 4 replies-in-progress, 5 order, 6 seq, 7 bindings,
--       then users, head of each fair read
-- ARGV: 1 ttl ms, 2 inbox field, 3 payload, 4 binding field ('' for none), 5 the number of fair reads
--       (0 for none), then per read: its ARGV count, its ARGV (as READ_MANY)
-- returns {0} busy, {1, reply} completed before (no lease kept), {2, token, false, binding, reads} new entry,
--         {3, token, reply, binding} an entry a crashed run had answered (binding: false when unbound);
--         the fair reads run once the lease is held, so they see every write of the source's earlier turns
local final = redis.call('GET', KEYS[2])
if final then return {1, final} end
local now = now_ms()
local cur = redis.call('HMGET', KEYS[1], 'token', 'expires', 'held')
if cur[3] == '1' and tonumber(cur[2]) > now then return {0} end
local token = (tonumber(cur[1]) or 0) + 1
redis.call('HSET', KEYS[1], 'token', token, 'expires', now + tonumber(ARGV[1]), 'held', 1)
local binding = false
if ARGV[4] ~= '' then binding = redis.call('HGET', KEYS[7], ARGV[4]) end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 then
  local reply = redis.call('HGET', KEYS[4], ARGV[2])
  if reply then return {3, token, reply, binding} end
else
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[5], redis.call('INCR', KEYS[6]), ARGV[2])
end
-- the reads cannot fail the turn: the lease and the entry are written already (a script is not
-- rolled back), so a read that raises (malformed data) leaves reads false and the caller reads alone
local reads = false
if (tonumber(ARGV[5]) or 0) > 0 then
  local ok, got = pcall(fair_many, KEYS, ARGV, 7, 5)
  if ok then reads = got end
end
return {2, token, false, binding, reads}
"""

FINISH_TURN = COMMON + APPEND_FN + LEASE_FN + r"""
-- KEYS: 1 the lease, 2 payloads, 3 replies-in-progress, 4 order, 5 the final reply's key, 6 the history
--       registry, then per history written: meta, users, oldest, mids, head
-- ARGV: 1 inbox field, 2 reply, 3 expires (epoch ms), 4 token, 5 number of histories, then per history:
--       user key prefix, max_per_user, ttl ms, history id, first timestamp, number of records, then per
--       record: user_id, timestamp, message_id, member without seq
-- returns {0} when the lease is no longer ours (only the reply is attached), else {1, stored...}
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2]) end
local now = now_ms()
local cur = redis.call('HMGET', KEYS[1], 'token', 'expires', 'held')
if not (cur[1] == ARGV[4] and cur[3] == '1' and tonumber(cur[2]) > now) then return {0} end
local out = {1}
local pos = 6
for h = 1, tonumber(ARGV[5]) do
  local k = 6 + 5 * (h - 1)
  local ukp, keep, ttl, hid, first, n = ARGV[pos], tonumber(ARGV[pos + 1]), ARGV[pos + 2], ARGV[pos + 3],
                                        ARGV[pos + 4], tonumber(ARGV[pos + 5])
  pos = append_all(out, KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], ukp, keep, ttl, hid, ARGV,
                   pos + 6, n)
  if unregistered(KEYS[k + 1]) == 1 then
    redis.call('ZADD', KEYS[6], 'NX', first, hid)
    redis.call('HSET', KEYS[k + 1], 'reg', 1)
  end
end
if tonumber(ARGV[3]) > now then redis.call('SET', KEYS[5], ARGV[2], 'NX', 'PXAT', ARGV[3]) end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[1], 'held', 0)
return out
"""
