-- A long-running headless Neovim that bench/bench.py drives: one JSON
-- request per line on stdin, one `@@BENCH {json}` answer per request on
-- stdout. Everything timed here is timed inside Neovim (vim.uv.hrtime), so
-- the control channel's own latency never enters a figure.
--
--   nvim --headless -u NONE -i NONE -n --cmd 'set rtp^=ROOT' \
--        -c 'runtime plugin/himalaya-sync.vim' -c 'luafile ROOT/bench/agent.lua'
--
-- While idle the agent only waits on stdin, so the editor loop is as quiet
-- as a user's idle Neovim.
local uv = vim.uv or vim.loop
local B = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h') .. '/lib.lua')

local function reply(t)
  io.stdout:write('@@BENCH ' .. vim.json.encode(t) .. '\n')
  io.stdout:flush()
end

local H = {}

--- {rc, extra?}: configures the plugin and (unless cold) loads the library,
--- subscribes the manager and parses the mbsyncrc, as a first use would.
function H.setup(req, done)
  B.configure(req.rc, req.extra)
  local manager = require('himalaya.sync.manager')
  local targets, err = manager.list_targets()
  if not targets then
    return done({ ok = false, error = err })
  end
  local lib = require('himalaya.sync.native').get()
  local cfg = require('himalaya.sync.config')
  done({
    targets = vim.tbl_map(function(t)
      return t.name
    end, targets),
    build_id = lib.build_id,
    version = lib.version,
    max_parallel = cfg.get().max_parallel or vim.NIL,
    max_connections = cfg.get().max_connections or vim.NIL,
    pid = vim.fn.getpid(),
  })
end

--- The library's version and build (loads it).
function H.info(_, done)
  local lib, err = require('himalaya.sync.native').get()
  if not lib then
    return done({ ok = false, error = err })
  end
  done({ build_id = lib.build_id, version = lib.version, pid = vim.fn.getpid() })
end

--- {account, lag?}: `:HimalayaSync full ACCOUNT`, timed from the command to
--- the completion seen by `User HimalayaSyncUpdate`; with `lag`, a 1 ms
--- timer runs from just before the command until completion.
function H.sync(req, done)
  local stop = req.lag and B.lag_timer()
  B.command_sync(req.account, function(ms, info, err)
    local lag, main
    if stop then
      lag, main = stop()
    end
    if not ms then
      return done({ ok = false, error = err })
    end
    done({ ms = ms, status = info.status, result = info.result, message = info.message, lag = lag, main = main })
  end)
end

--- {ms}: the 1 ms timer alone, in this idle Neovim.
function H.idle(req, done)
  local stop = B.lag_timer()
  vim.defer_fn(function()
    local lag, main = stop()
    done({ lag = lag, main = main, ms = req.ms })
  end, req.ms)
end

local lag_stop
--- Starts the 1 ms timer and answers at once (the driver then runs
--- something outside Neovim and asks for `lag_stop`).
function H.lag_start(_, done)
  lag_stop = B.lag_timer()
  done({ t = uv.hrtime() })
end

function H.lag_stop(_, done)
  if not lag_stop then
    return done({ ok = false, error = 'lag_start first' })
  end
  local lag, main = lag_stop()
  lag_stop = nil
  done({ lag = lag, main = main })
end

-- The original plugin's progress parsing: mbsync under a pty through
-- jobstart(), every chunk split on \r and \n, each piece matched in Lua.
local PATTERN = 'C: (%d+)/(%d+)  B: (%d+)/(%d+)  F: %+(%d+)/(%d+) %*(%d+)/(%d+) #(%d+)/(%d+)  '
  .. 'N: %+(%d+)/(%d+) %*(%d+)/(%d+) #(%d+)/(%d+)'

local function lua_parse(piece)
  local c1, c2, b1, b2, fn1, fn2, ff1, ff2, ft1, ft2, nn1, nn2, nf1, nf2, nt1, nt2 = piece:match(PATTERN)
  if not c1 then
    return nil
  end
  return {
    channels = { done = tonumber(c1), total = tonumber(c2) },
    boxes = { done = tonumber(b1), total = tonumber(b2) },
    far = {
      new = { done = tonumber(fn1), total = tonumber(fn2) },
      flags = { done = tonumber(ff1), total = tonumber(ff2) },
      trash = { done = tonumber(ft1), total = tonumber(ft2) },
    },
    near = {
      new = { done = tonumber(nn1), total = tonumber(nn2) },
      flags = { done = tonumber(nf1), total = tonumber(nf2) },
      trash = { done = tonumber(nt1), total = tonumber(nt2) },
    },
  }
end

--- {rc, channel, lag?}: the baseline. Same mbsync command line as the
--- plugin runs (`mbsync -c RC -V CHANNEL`, LC_ALL=C).
function H.jobstart_sync(req, done)
  local stop = req.lag and B.lag_timer()
  local frames, last = 0, nil
  local t0 = uv.hrtime()
  local job = vim.fn.jobstart({ 'mbsync', '-c', req.rc, '-V', req.channel }, {
    pty = true,
    env = { LC_ALL = 'C' },
    on_stdout = function(_, data)
      for _, chunk in ipairs(data) do
        for piece in chunk:gmatch('[^\r\n]+') do
          local p = lua_parse(piece)
          if p then
            frames = frames + 1
            last = p
          end
        end
      end
    end,
    on_exit = function(_, code)
      local ms = (uv.hrtime() - t0) / 1e6
      local lag, main
      if stop then
        lag, main = stop()
      end
      done({
        ms = ms,
        code = code,
        frames = frames,
        pulled = last and last.near.new.done or 0,
        lag = lag,
        main = main,
      })
    end,
  })
  if job <= 0 then
    if stop then
      stop()
    end
    done({ ok = false, error = 'jobstart failed: ' .. job })
  end
end

--- {accounts, mode = 'parallel'|'sequential'}: full syncs through
--- manager.start_sync; time from the first start to the last completion.
function H.multi(req, done)
  local results, n = {}, #req.accounts
  local t0 = uv.hrtime()
  local failed = false
  local function finish()
    done({ ms = (uv.hrtime() - t0) / 1e6, results = results })
  end
  local function start(i, after)
    B.api_sync(req.accounts[i], function(ms, result, info, err)
      if failed then
        return
      end
      if not ms then
        failed = true
        return done({ ok = false, error = err })
      end
      results[i] = { account = req.accounts[i], ms = ms, status = info.status, result = result }
      after()
    end)
  end
  if req.mode == 'sequential' then
    local function step(i)
      if i > n then
        return finish()
      end
      start(i, function()
        step(i + 1)
      end)
    end
    step(1)
  else
    local left = n
    for i = 1, n do
      start(i, function()
        left = left - 1
        if left == 0 then
          finish()
        end
      end)
    end
  end
end

--- {mode, n, file, name}: n lock checks. `module`: acquire_lock(name, 0) +
--- release_lock(name); `fn_system`: vim.fn.system({'flock','-n',file,'true'});
--- `vim_system`: vim.system({...}):wait().
function H.locks(req, done)
  local n, bad = req.n, 0
  local t0
  if req.mode == 'module' then
    local lock = require('himalaya.sync.lock')
    lock.list_locks() -- library loaded and lock folder open before timing
    t0 = uv.hrtime()
    for _ = 1, n do
      if not lock.acquire_lock(req.name, 0) then
        bad = bad + 1
      end
      if not lock.release_lock(req.name) then
        bad = bad + 1
      end
    end
  elseif req.mode == 'fn_system' then
    local cmd = { 'flock', '-n', req.file, 'true' }
    t0 = uv.hrtime()
    for _ = 1, n do
      vim.fn.system(cmd)
      if vim.v.shell_error ~= 0 then
        bad = bad + 1
      end
    end
  else
    local cmd = { 'flock', '-n', req.file, 'true' }
    t0 = uv.hrtime()
    for _ = 1, n do
      if vim.system(cmd):wait().code ~= 0 then
        bad = bad + 1
      end
    end
  end
  local s = (uv.hrtime() - t0) / 1e9
  done({ n = n, seconds = s, ops_per_s = n / s, failures = bad })
end

local stream_lines
--- {file, parser = 'plugin'|'lua'}: feeds a recorded mbsync pty stream,
--- one line (frame) at a time, to mbsync.parse_progress_line (or to the
--- original's string.match for reference).
function H.parse(req, done)
  if not stream_lines or stream_lines.file ~= req.file then
    local f = assert(io.open(req.file, 'rb'))
    local data = f:read('*a')
    f:close()
    local lines, bytes = {}, 0
    for piece in data:gmatch('[^\r\n]+') do
      lines[#lines + 1] = piece
      bytes = bytes + #piece
    end
    stream_lines = { file = req.file, lines = lines, bytes = bytes, raw = #data }
  end
  local lines = stream_lines.lines
  local parse
  if req.parser == 'lua' then
    parse = lua_parse
  else
    local mbsync = require('himalaya.sync.mbsync')
    mbsync.parse_progress_line('C: 0/1  B: 0/0  F: +0/0 *0/0 #0/0  N: +0/0 *0/0 #0/0') -- library loaded
    parse = mbsync.parse_progress_line
  end
  local frames = 0
  local t0 = uv.hrtime()
  for i = 1, #lines do
    if parse(lines[i]) then
      frames = frames + 1
    end
  end
  local s = (uv.hrtime() - t0) / 1e9
  done({
    seconds = s,
    lines = #lines,
    frames = frames,
    bytes = stream_lines.bytes,
    raw_bytes = stream_lines.raw,
  })
end

--- {mode = 'single'|'burst', n}: Rust -> Lua event latency through the
--- library's test hook. `single`: n events, one at a time (the next is
--- emitted 2 ms after the previous arrived); `burst`: n events at once.
function H.events(req, done)
  local native = require('himalaya.sync.native')
  local lib = native.get()
  local lat = {}
  local t0 = uv.hrtime()
  if req.mode == 'burst' then
    local id = lib.emit_test_events(req.n, 'bench')
    native.on_id(id, function(ev)
      lat[#lat + 1] = lib.now_us() - ev.data.t
      if #lat == req.n then
        native.off(id)
        done({ latency_us = lat, total_ms = (uv.hrtime() - t0) / 1e6 })
      end
    end)
    return
  end
  local function one()
    local id = lib.emit_test_events(1, 'bench')
    native.on_id(id, function(ev)
      native.off(id)
      lat[#lat + 1] = lib.now_us() - ev.data.t
      if #lat == req.n then
        done({ latency_us = lat, total_ms = (uv.hrtime() - t0) / 1e6 })
      else
        vim.defer_fn(one, 2)
      end
    end)
  end
  one()
end

function H.rss(_, done)
  done({ rss_kb = B.rss_kb() })
end

--- {account, n}: `manager.get_folder_counts(account)` n times; the time of
--- each call (ms) and the totals of the last.
function H.counts(req, done)
  local manager = require('himalaya.sync.manager')
  local times, counts = {}, nil
  for i = 1, req.n do
    local started = uv.hrtime()
    local c, err = manager.get_folder_counts(req.account)
    times[i] = (uv.hrtime() - started) / 1e6
    if not c then
      return done({ ok = false, error = err })
    end
    counts = c
  end
  local total, unread, flagged = 0, 0, 0
  for _, c in ipairs(counts) do
    total, unread, flagged = total + c.total, unread + c.unread, flagged + c.flagged
  end
  done({ ms = times, folders = #counts, total = total, unread = unread, flagged = flagged })
end

--- {account}: one `start_sync('check')`, timed from the call to its
--- on_complete callback.
function H.check(req, done)
  local started = uv.hrtime()
  local id, err = require('himalaya.sync.manager').start_sync('check', {
    account = req.account,
    on_complete = function(result, info)
      local ms = (uv.hrtime() - started) / 1e6
      if not result.success then
        return done({ ok = false, error = info.message })
      end
      done({ ms = ms, new = result.new, folders = #result.folders, engine_ms = result.duration * 1000 })
    end,
  })
  if not id then
    done({ ok = false, error = err })
  end
end

function H.quit(_, done)
  done({})
  vim.schedule(function()
    vim.cmd('qa!')
  end)
end

local function handle(line)
  local ok, req = pcall(vim.json.decode, line)
  if not ok or type(req) ~= 'table' or not H[req.cmd] then
    return reply({ ok = false, error = 'bad request: ' .. line })
  end
  local answered = false
  local function done(res)
    if answered then
      return
    end
    answered = true
    if res.ok == nil then
      res.ok = true
    end
    res.cmd = req.cmd
    res.seq = req.seq
    reply(res)
  end
  local okc, err = pcall(H[req.cmd], req, done)
  if not okc then
    done({ ok = false, error = tostring(err) })
  end
end

local pending = ''
local stdin = assert(uv.new_pipe(false))
stdin:open(0)
stdin:read_start(function(err, data)
  if err or not data then
    -- The driver went away: leave (VimLeavePre stops any sync).
    vim.schedule(function()
      vim.cmd('qa!')
    end)
    return
  end
  pending = pending .. data
  while true do
    local nl = pending:find('\n', 1, true)
    if not nl then
      break
    end
    local line = pending:sub(1, nl - 1)
    pending = pending:sub(nl + 1)
    vim.schedule(function()
      handle(line)
    end)
  end
end)
reply({ cmd = 'hello', ok = true, pid = vim.fn.getpid() })
