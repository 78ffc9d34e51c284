-- Faults in the middle of a real sync against a real dovecot: the server
-- killed and started again, the server frozen with SIGSTOP, and Neovim
-- killed with SIGKILL. Every case ends with the Message-IDs of both sides
-- equal to what the server held at the start: nothing lost, nothing twice.
local t = require('helpers')
local describe, it, eq, ok = t.describe, t.it, t.eq, t.ok

local uv = vim.uv or vim.loop
local manager = require('himalaya.sync.manager')

-- Enough mail that a fault lands mid-sync: on loopback an initial sync
-- pulls about 7,000 messages a second, and 2,000 once finished before the
-- server was killed (the kill itself takes a moment).
local MESSAGES = '6000'
-- Messages pulled before the fault is injected.
local MID = 50

--- Quick retries, so a test spends its time on the fault, not on waiting.
local function fast_retry(max_attempts)
  return { base = 1, factor = 1, cap = 1, max_attempts = max_attempts, jitter = 0 }
end

--- Messages copied to the local side so far by the sync in progress.
local function pulled()
  local info = manager.get_sync_info()
  local p = info.progress
  return p and p.near and p.near.new and p.near.new.done or 0
end

--- Both sides hold exactly the Message-IDs the server started with.
local function assert_ids(fx, before)
  local server, loc = fx.ids('demo', 'server'), fx.ids('demo', 'local')
  eq(before, server, 'server Message-IDs are unchanged')
  eq(before, loc, 'local Message-IDs equal the server ones')
  local n = 0
  for _, ids in pairs(loc) do
    n = n + #ids
  end
  eq(tonumber(MESSAGES), n, 'messages synced')
end

--- Starts a full sync of demo; returns a function giving its end (or nil).
local function start(fx)
  local done
  local id, err = manager.start_sync('full', {
    account = 'demo',
    on_complete = function(result, info)
      done = { result = result, info = info }
    end,
  })
  ok(id, err)
  t.wait_for(function()
    return pulled() >= MID or done ~= nil
  end, 60000, 'the sync to pull its first messages')
  ok(not done, 'the sync was still running when the fault came')
  return function()
    return done
  end
end

--- A headless Neovim that runs a full sync of demo with `cfg`; it prints
--- `progress` once MID messages are pulled and `done <json result>` at the
--- end, then quits.
local function other_neovim(cfg)
  local script = t.tmpdir() .. '/child.lua'
  t.write(
    script,
    ([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q }, notify = false, retry = { max_attempts = 0 } }
local said = false
local done
local id, err = require('himalaya.sync.manager').start_sync('full', {
  account = 'demo',
  on_progress = function(p)
    if not said and p.near.new.done >= %d then
      said = true
      io.stdout:write('progress\n')
      io.stdout:flush()
    end
  end,
  on_complete = function(result) done = result end,
})
if not id then
  io.stdout:write('done ' .. vim.json.encode({ success = false, error = err }) .. '\n')
  vim.cmd('cquit 1')
end
vim.wait(120000, function() return done ~= nil end, 20)
io.stdout:write('done ' .. vim.json.encode(done or { success = false, error = 'no result' }) .. '\n')
io.stdout:flush()
vim.cmd('qa!')
]]):format(t.root, cfg, MID)
  )
  return t.child_nvim(script)
end

describe('faults', function()
  it('server killed mid-sync and started again: the retry completes the sync', function()
    local fx = t.fixture({ '--messages', MESSAGES })
    local before = fx.ids('demo', 'server')
    t.use(fx.mbsyncrc, { mbsync = { timeout = 30 }, retry = fast_retry(20) })
    local finished = start(fx)
    fx.kill_server()
    -- While it is down, attempts fail (connection refused) and are retried.
    t.wait_for(function()
      local info = manager.get_sync_info()
      return info.status == 'retrying' or finished() ~= nil
    end, 40000, 'the sync to notice the dead server')
    ok(not finished(), 'the sync waits for the server: ' .. vim.inspect(finished()))
    local info = manager.get_sync_info()
    eq('network', info.error and info.error.kind, vim.inspect(info.error))
    vim.wait(1500)
    fx.restart_server()
    t.wait_for(function()
      return finished() ~= nil
    end, 90000, 'the retried sync to end')
    local result = finished().result
    eq(true, result.success, result.error)
    ok(result.attempts >= 2, 'attempts: ' .. tostring(result.attempts))
    assert_ids(fx, before)
  end)

  it('server frozen with SIGSTOP: the watchdog ends the attempt as timeout, the retry completes', function()
    local TIMEOUT = 2
    local fx = t.fixture({ '--messages', MESSAGES })
    local before = fx.ids('demo', 'server')
    -- Through a slightly slow link, so that the sync is surely mid-session
    -- when the server freezes, however fast this machine is.
    local port = t.closed_port()
    t.relay(port, fx.port, 5)
    t.use(t.mbsyncrc_on_port(fx, port, 'slow'), { mbsync = { timeout = TIMEOUT }, retry = fast_retry(3) })
    local finished = start(fx)
    -- Frozen while an imap process serves mbsync: on a fast machine the
    -- first messages may arrive just before mbsync logs out.
    t.wait_for(function()
      for _, pid in ipairs(fx.server_pids()) do
        if select(2, t.proc_state(pid)) == 'imap' then
          return true
        end
      end
      return finished() ~= nil
    end, 30000, 'an imap process serving the sync')
    ok(not finished(), 'the sync was still running when the server froze')
    local pids = fx.signal('STOP')
    local frozen_at = uv.hrtime()
    -- Every dovecot process is frozen, the imap process serving mbsync too
    -- (T), or had ended and waits for its frozen parent (Z). A signal
    -- reaches a process a moment later (on another CPU, in a system call).
    local procs
    vim.wait(2000, function()
      procs = {}
      for _, pid in ipairs(pids) do
        local state, comm = t.proc_state(pid)
        if state then
          procs[#procs + 1] = { pid = pid, state = state, comm = comm }
        end
      end
      return vim.iter(procs):all(function(p)
        return p.state == 'T' or p.state == 'Z'
      end)
    end, 5)
    local comms = {}
    for _, p in ipairs(procs) do
      ok(p.state == 'T' or p.state == 'Z', ('%s (%d) is stopped: %s'):format(p.comm, p.pid, p.state))
      comms[#comms + 1] = p.comm
    end
    ok(vim.tbl_contains(comms, 'imap'), 'an imap process was frozen: ' .. table.concat(comms, ', '))
    t.wait_for(function()
      return manager.get_sync_info().status == 'retrying' or finished() ~= nil
    end, (TIMEOUT + 10) * 1000, 'the watchdog')
    local secs = (uv.hrtime() - frozen_at) / 1e9
    local info = manager.get_sync_info()
    eq('retrying', info.status, vim.inspect(finished()))
    eq('timeout', info.error.kind, info.error.message)
    -- From the freeze: what the server had sent already (in the kernel's
    -- buffers and the relay's, at most 64 KiB) still reaches mbsync for a
    -- moment, and counts as activity, for longer on a slower or busier
    -- machine. The bound only has to tell the watchdog's limit from a hang.
    ok(secs <= TIMEOUT + 5, ('the watchdog fired after %.1f s (limit %d s)'):format(secs, TIMEOUT))
    fx.signal('CONT', pids)
    t.wait_for(function()
      return finished() ~= nil
    end, 90000, 'the retried sync to end')
    local result = finished().result
    eq(true, result.success, result.error)
    -- The retry 1 s later may meet the server still frozen on a slow
    -- machine, and time out too: then the third attempt completes.
    ok(result.attempts >= 2, 'attempts: ' .. result.attempts)
    assert_ids(fx, before)
  end)

  it('Neovim killed with SIGKILL during a token refresh: the refresh script dies with it', function()
    local dir = t.tmpdir()
    local script = dir .. '/child.lua'
    -- No token yet: the sync runs the (slow) refresh script first.
    t.write(
      script,
      ([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = {
  mbsync = { config = %q },
  notify = false,
  accounts = { demo = { oauth = {
    refresh_cmd = 'sleep 41.275; echo late',
    store = { backend = 'encrypted', dir = %q, key_cmd = 'printf correct-horse-battery-staple' },
  } } },
}
assert(require('himalaya.sync.manager').start_sync('full', { account = 'demo' }))
io.stdout:write('started\n')
io.stdout:flush()
vim.wait(120000, function() return false end, 50)
]]):format(t.root, t.standalone_mbsyncrc(dir, t.closed_port()), dir .. '/tokens')
    )
    local child = t.child_nvim(script)
    t.wait_for(function()
      return #t.pgrep('sleep 41.275') > 0
    end, 30000, 'the refresh script to run: ' .. child.out)
    child.proc:kill(9)
    child.proc:wait(5000)
    t.wait_for(function()
      return #t.pgrep('sleep 41.275') == 0
    end, 2000, 'the refresh script to die with its Neovim')
  end)

  it('Neovim killed with SIGKILL mid-sync: no mbsync left, lock free at once, the next Neovim completes', function()
    local fx = t.fixture({ '--messages', MESSAGES })
    local before = fx.ids('demo', 'server')
    local child = other_neovim(fx.mbsyncrc)
    t.wait_for(function()
      return child.out:find('progress\n', 1, true) or child.out:find('done ', 1, true)
    end, 60000, 'the other Neovim to start pulling mail')
    ok(not child.out:find('done ', 1, true), 'it was still syncing: ' .. child.out)
    local mbsync = t.pgrep('mbsync .*' .. fx.mbsyncrc)
    eq(1, #mbsync, 'one mbsync runs')
    child.proc:kill(9)
    child.proc:wait(5000)
    t.wait_for(function()
      return #t.pgrep('mbsync .*' .. fx.mbsyncrc) == 0
    end, 2000, 'mbsync to die with its Neovim')
    local lock = require('himalaya.sync.lock')
    eq(true, lock.acquire_lock('sync-demo', 0), 'the account lock is free at once')
    lock.release_lock('sync-demo')

    local next = other_neovim(fx.mbsyncrc)
    t.wait_for(function()
      return next.out:find('done [^\n]*\n') ~= nil
    end, 90000, 'the next Neovim to finish its sync')
    local result = vim.json.decode(next.out:match('done ([^\n]*)\n'))
    eq(true, result.success, result.error)
    eq(0, next.proc:wait(10000).code)
    assert_ids(fx, before)
  end)
end)
