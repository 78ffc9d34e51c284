-- Helpers shared by the Lua scripts that bench/bench.py runs in Neovim
-- (bench/agent.lua, bench/fresh.lua). Loaded with dofile(); returns a table.
local uv = vim.uv or vim.loop

local M = {}

M.root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h')

-- Statuses after which a sync is over (anything else: running, queued,
-- retrying, ... is still in progress).
local FINISHED = { completed = true, error = true, cancelled = true }

--- Configures the plugin the way a user would: vim.g.himalaya_sync.
---@param rc string mbsyncrc path
---@param extra? table more options (e.g. max_parallel)
function M.configure(rc, extra)
  vim.g.himalaya_sync = vim.tbl_extend('force', { mbsync = { config = rc }, notify = false }, extra or {})
end

--- Errors the plugin reported through vim.notify (headless Neovim has no UI
--- to show them; the benchmark must not wait for a sync that never started).
M.errors = {}
local notify = vim.notify
vim.notify = function(msg, level, opts)
  if level and level >= vim.log.levels.ERROR then
    M.errors[#M.errors + 1] = tostring(msg)
  end
  return notify(msg, level, opts)
end

--- VmRSS of this Neovim in KiB.
---@return integer?
function M.rss_kb()
  local f = io.open('/proc/self/status', 'r')
  if not f then
    return nil
  end
  local s = f:read('*a')
  f:close()
  return tonumber(s:match('VmRSS:%s*(%d+)'))
end

--- Highest sync id this Neovim has seen (0 when the manager is not loaded,
--- so that a cold measurement does not load it early).
---@return integer
function M.max_sync_id()
  local manager = package.loaded['himalaya.sync.manager']
  if not manager then
    return 0
  end
  local m = 0
  for _, s in ipairs(manager.get_sync_info().syncs or {}) do
    if s.id and s.id > m then
      m = s.id
    end
  end
  return m
end

--- Runs `:HimalayaSync full {account}` and calls `done(ms, info, err)` when
--- the `User HimalayaSyncUpdate` autocmd (what a statusline sees) reports the
--- new sync finished. `ms` runs from just before the command to that moment.
---@param account string
---@param done fun(ms: number?, info: table?, err: string?)
function M.command_sync(account, done)
  local prev = M.max_sync_id()
  local nerr = #M.errors
  local finished = false
  local t0
  local au
  au = vim.api.nvim_create_autocmd('User', {
    pattern = 'HimalayaSyncUpdate',
    callback = function(ev)
      if finished then
        return true
      end
      for _, s in ipairs((ev.data or {}).syncs or {}) do
        -- The result too: a sync reported finished without one would be a
        -- plugin bug, and must not pass for a completion here.
        if s.id and s.id > prev and FINISHED[s.status] and type(s.result) == 'table' then
          finished = true
          done((uv.hrtime() - t0) / 1e6, s)
          return true
        end
      end
    end,
  })
  t0 = uv.hrtime()
  vim.cmd('HimalayaSync full ' .. account)
  if #M.errors > nerr and not finished then
    finished = true
    pcall(vim.api.nvim_del_autocmd, au)
    return done(nil, nil, M.errors[#M.errors])
  end
  -- Registered after the command (so a cold measurement loads nothing
  -- early); the engine's sync_done cannot arrive before the loop runs.
  M.watch_engine_done(function(id)
    return id > prev
  end, function()
    return finished
  end, function(id)
    finished = true
    pcall(vim.api.nvim_del_autocmd, au)
    done(
      nil,
      nil,
      (
        'plugin bug: the engine sent sync_done for sync #%d but no User HimalayaSyncUpdate '
        .. 'showed it finished with a result within %d s'
      ):format(id, M.GRACE_MS / 1000)
    )
  end)
end

M.GRACE_MS = 5000

--- Fails fast instead of waiting for a timeout when the engine reports a
--- sync's end (`sync_done`) but the user-visible completion never follows.
---@param match fun(id: integer): boolean which syncs to watch
---@param seen fun(): boolean true once the user-visible completion came
---@param fail fun(id: integer)
function M.watch_engine_done(match, seen, fail)
  local native = require('himalaya.sync.native')
  local off
  off = native.on('sync_done', function(ev)
    if not match(ev.data.id or ev.id) then
      return
    end
    off()
    vim.defer_fn(function()
      if not seen() then
        fail(ev.data.id or ev.id)
      end
    end, M.GRACE_MS)
  end)
end

--- Starts a sync through `manager.start_sync` and calls `done(ms, result,
--- info, err)` from its on_complete callback.
function M.api_sync(account, done)
  local t0 = uv.hrtime()
  local called = false
  local id, err = require('himalaya.sync.manager').start_sync('full', {
    account = account,
    on_complete = function(result, info)
      if not called then
        called = true
        done((uv.hrtime() - t0) / 1e6, result, info)
      end
    end,
  })
  if not id then
    called = true
    return done(nil, nil, nil, err)
  end
  M.watch_engine_done(function(i)
    return i == id
  end, function()
    return called
  end, function()
    called = true
    done(
      nil,
      nil,
      nil,
      ('plugin bug: the engine sent sync_done for sync #%d of %s but on_complete was ' .. 'not called within %d s'):format(
        id,
        account,
        M.GRACE_MS / 1000
      )
    )
  end)
end

--- Neovim's main thread from /proc/self/schedstat (the thread-group
--- leader): ns on a CPU and ns runnable but waiting for one.
---@return integer? cpu_ns
---@return integer? wait_ns
function M.schedstat()
  local f = io.open('/proc/self/schedstat', 'r')
  if not f then
    return nil
  end
  local s = f:read('*l') or ''
  f:close()
  local run, wait = s:match('^(%d+)%s+(%d+)')
  return tonumber(run), tonumber(wait)
end

--- A 1 ms repeating libuv timer in this Neovim's loop. Returns `stop()`,
--- which stops it and returns the lag of every tick in microseconds (the
--- interval since the previous tick minus 1000 µs), and the main thread's
--- CPU time and run-queue wait over the same span (ms; nil if unknown).
---@return fun(): number[], table
function M.lag_timer()
  local samples, n = {}, 0
  local timer = assert(uv.new_timer())
  local run0, wait0 = M.schedstat()
  local last = uv.hrtime()
  timer:start(1, 1, function()
    local now = uv.hrtime()
    n = n + 1
    samples[n] = (now - last) / 1e3 - 1000
    last = now
  end)
  return function()
    timer:stop()
    timer:close()
    local run1, wait1 = M.schedstat()
    local main = vim.empty_dict()
    if run0 and run1 then
      main = { cpu_ms = (run1 - run0) / 1e6, wait_ms = (wait1 - wait0) / 1e6 }
    end
    return samples, main
  end
end

--- Writes `t` as JSON to `path`.
function M.write_json(path, t)
  local f = assert(io.open(path, 'w'))
  f:write(vim.json.encode(t))
  f:close()
end

return M
