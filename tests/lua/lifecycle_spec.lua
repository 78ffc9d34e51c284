-- Neovim's lifetime and its children: :qa and SIGKILL while mbsync runs,
-- :qa as a sync ends, and two Neovims syncing the same account.
local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local uv = vim.uv or vim.loop

--- Writes an mbsyncrc for account "demo" pointing at `port`.
local function config_for(port)
  return t.standalone_mbsyncrc(t.tmpdir(), port)
end

--- Starts another headless Neovim that syncs "demo" with `cfg`; it prints
--- "running" once mbsync runs, then quits with :qa if `quit` is set, or
--- waits to be killed.
local function other_neovim(cfg, opts)
  local script = t.tmpdir() .. '/child.lua'
  t.write(
    script,
    ([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q, timeout = %d }, notify = false, retry = { max_attempts = 0 } }
local manager = require('himalaya.sync.manager')
local done = false
assert(manager.start_sync('full', { account = 'demo', on_complete = function() done = true end }))
local pids = {}
vim.wait(10000, function()
  pids = vim.fn.systemlist({ 'pgrep', '-f', 'mbsync .*' .. %q })
  return #pids > 0
end, 20)
io.stdout:write(#pids == 1 and ('running ' .. pids[1] .. '\n') or ('mbsync processes: ' .. #pids .. '\n'))
io.stdout:flush()
if %s then
  vim.cmd('qa!')
end
vim.wait(120000, function() return done end, 50)
]]):format(t.root, cfg, opts.timeout or 60, cfg, opts.quit and 'true' or 'false')
  )
  local state = t.child_nvim(script)
  t.wait_for(function()
    return state.out:find('\n') ~= nil
  end, 20000, 'the other Neovim to start mbsync')
  local pid = state.out:match('^running (%d+)\n')
  ok(pid, 'the other Neovim said: ' .. state.out)
  state.mbsync = { tonumber(pid) }
  return state
end

local function alive(pid)
  return uv.kill(pid, 0) == 0
end

describe('lifecycle', function()
  it(':qa while mbsync runs: Neovim exits promptly and leaves no process', function()
    local cfg = config_for(t.silent_server())
    local child = other_neovim(cfg, { quit = true })
    local started = uv.hrtime()
    local res = child.proc:wait(10000)
    local secs = (uv.hrtime() - started) / 1e9
    eq(0, res.code)
    ok(secs < 3, ('Neovim took %.2f s to quit'):format(secs))
    ok(not alive(child.mbsync[1]), 'mbsync is gone')
    eq({}, t.pgrep('mbsync .*' .. cfg))
    -- Its log says so, before the process ended (the writer thread has the
    -- lowest priority), and not as a failure of mbsync.
    local line = ('%%[%d%%] sync #%%d+ full sync of demo cancelled: Neovim is exiting\n'):format(child.proc.pid)
    local log = t.read(require('himalaya.sync.manager').log_path())
    ok(log:find('info  ' .. line) ~= nil, log:sub(-2000))
  end)

  it(':qa while a repair waits for the lock: Neovim does not wait for the repair', function()
    local dir = t.tmpdir()
    local cfg = t.standalone_mbsyncrc(dir, t.silent_server())
    for _, sub in ipairs({ 'cur', 'new', 'tmp' }) do
      vim.fn.mkdir(dir .. '/mail/INBOX/' .. sub, 'p')
    end
    local holder = t.hold_plugin_lock('sync-demo', 60)
    t.defer(holder.stop)
    local script = t.tmpdir() .. '/child.lua'
    t.write(
      script,
      ([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q }, notify = false }
assert(require('himalaya.sync.manager').start_sync('repair', { account = 'demo', folders = { 'INBOX' } }))
vim.wait(500)
io.stdout:write(require('himalaya.sync.manager').get_sync_info().status .. '\n')
io.stdout:write(('quitting at %%d\n'):format(vim.uv.hrtime()))
io.stdout:flush()
vim.cmd('qa!')
]]):format(t.root, cfg)
    )
    local child = t.child_nvim(script)
    local res = child.proc:wait(20000)
    local gone = uv.hrtime()
    eq(0, res.code, child.out)
    -- Still waiting (the repair had not failed) when it quit.
    local quitting = tonumber(child.out:match('^running\nquitting at (%d+)'))
    ok(quitting, child.out)
    -- Work that must finish gets up to 2 s at exit; a repair still waiting
    -- for its lock is not such work.
    local secs = (gone - quitting) / 1e9
    ok(secs < 1.5, ('Neovim took %.1f s to quit'):format(secs))
  end)

  it('SIGKILL of Neovim while mbsync runs: mbsync dies too and the account lock is free', function()
    local cfg = config_for(t.silent_server())
    local child = other_neovim(cfg, {})
    child.proc:kill(9)
    child.proc:wait(5000)
    t.wait_for(function()
      return not alive(child.mbsync[1])
    end, 3000, 'mbsync to die with its Neovim')
    local lock = require('himalaya.sync.lock')
    eq(true, lock.acquire_lock('sync-demo', 0))
    lock.release_lock('sync-demo')
  end)

  it(':qa as a sync ends, another process holding the history lock: quits at once, entry kept', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    local manager = require('himalaya.sync.manager')
    local file = vim.fn.stdpath('state') .. '/himalaya-sync/history.json'
    -- Syncs of demo today in the history file (earlier tests add some).
    local function in_file()
      local saved = uv.fs_stat(file) and vim.json.decode(t.read(file)) or {}
      return saved.demo and saved.demo.syncs_today or 0
    end
    local before = in_file()
    local holder = t.hold_plugin_lock('history', 120)
    local script = t.tmpdir() .. '/child.lua'
    t.write(
      script,
      ([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q }, notify = false }
assert(require('himalaya.sync.manager').start_sync('full', {
  account = 'demo',
  on_complete = function(result)
    io.stdout:write(('ended %%s at %%d\n'):format(tostring(result.success), vim.uv.hrtime()))
    io.stdout:flush()
    vim.cmd('qa!')
  end,
}))
vim.wait(60000, function() return false end, 50)
]]):format(t.root, fx.mbsyncrc)
    )
    local child = t.child_nvim(script)
    local res = child.proc:wait(30000)
    local gone = uv.hrtime()
    eq(0, res.code, child.out)
    contains(child.out, 'ended true')
    -- It quit once the entry was saved, without waiting the 2 s Neovim
    -- gives a merge at exit (hrtime is the same clock in both processes).
    local ended = tonumber(child.out:match('ended true at (%d+)'))
    local secs = (gone - ended) / 1e9
    ok(secs < 1.9, ('Neovim took %.1f s to quit'):format(secs))
    -- Not merged (the lock is held), but kept and shown.
    eq(before, in_file())
    local h = manager.history()
    ok(h and h.demo, vim.inspect(h))
    eq(before + 1, h.demo.syncs_today)
    eq('full', h.demo.last_type)

    -- The next sync, once the lock is free, merges it.
    holder.stop()
    t.use(fx.mbsyncrc)
    local result = t.sync_and_wait('inbox', { account = 'demo' })
    ok(result.success, result.error)
    -- The pending files go once the history file has their entries.
    local pending = vim.fn.fnamemodify(file, ':h') .. '/history.json.pending-*'
    t.wait_for(function()
      return in_file() == before + 2 and #vim.fn.glob(pending, true, true) == 0
    end, 20000, 'both entries in ' .. file .. ' and no pending entry left')
    eq('inbox', manager.history().demo.last_type)
  end)

  it('two Neovims on one account: the second reports locked, or waits when asked', function()
    local cfg = config_for(t.silent_server())
    vim.g.himalaya_sync = { mbsync = { config = cfg, timeout = 3 }, notify = false, retry = { max_attempts = 0 } }
    -- Its watchdog (6 s) leaves time to ask on a busy machine.
    local child = other_neovim(cfg, { timeout = 6 })
    local manager = require('himalaya.sync.manager')

    local result = t.sync_and_wait('full', { account = 'demo' })
    eq('locked', result.kind)
    contains(result.error, 'another process')
    contains(result.error, 'nvim')
    ok(not result.error:find('\n'), 'one line')

    -- Asked to wait, it runs once the other sync ends (here: by its
    -- watchdog, since the server is silent), and then times out itself.
    local started = uv.hrtime()
    result = t.sync_and_wait('full', { account = 'demo', wait = 30 }, 40000)
    local secs = (uv.hrtime() - started) / 1e9
    eq('timeout', result.kind, result.error)
    ok(secs >= 3, ('it waited for the other sync (%.1f s)'):format(secs))
    ok(not alive(child.mbsync[1]))
    eq('error', manager.get_sync_info().status)
  end)
end)
