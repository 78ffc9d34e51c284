-- The manager against real dovecot + mbsync: queue and coalescing, parallel
-- accounts, retry with backoff, events and notifications, history.
local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local manager = require('himalaya.sync.manager')
local uv = vim.uv or vim.loop

local function use(mbsyncrc, extra)
  vim.g.himalaya_sync = vim.tbl_deep_extend('force', { mbsync = { config = mbsyncrc }, notify = false }, extra or {})
  -- The next test starts from no configuration (a stand-in mbsync of this
  -- test would be gone).
  t.defer(function()
    vim.g.himalaya_sync = nil
  end)
end

local function start(type, opts)
  local box = { done = nil }
  opts = vim.tbl_extend('force', opts, {
    on_complete = function(r, info)
      box.done = { result = r, info = info }
    end,
  })
  local id, err = manager.start_sync(type, opts)
  assert(id, err)
  box.id = id
  return box
end

local function wait_done(boxes, ms)
  t.wait_for(function()
    for _, b in ipairs(boxes) do
      if not b.done then
        return false
      end
    end
    return true
  end, ms or 120000, 'syncs to finish')
end

--- Deletes the local copy (and mbsync's state) so the next sync is initial.
local function wipe_local(fx)
  for _, a in pairs(fx.accounts) do
    vim.fn.delete(a.local_maildir, 'rf')
    vim.fn.mkdir(a.local_maildir, 'p')
  end
end

describe('queue', function()
  it('an inbox request joins a full sync until its mbsync starts; a full request during an inbox sync waits', function()
    local fx = t.fixture({ '--messages', '4000' })
    use(fx.mbsyncrc)
    -- Another process holds the account: the full sync waits for the lock,
    -- its mbsync not started, so an inbox request joins it.
    local holder = t.hold_plugin_lock('sync-demo', 60)
    local doomed = start('full', { account = 'demo', wait = 60 })
    eq(1, manager.cancel_sync(doomed.id))
    local full = start('full', { account = 'demo', wait = 60 })
    ok(full.id ~= doomed.id, 'a sync being cancelled takes no new request')
    local inbox = start('inbox', { account = 'demo' })
    eq(full.id, inbox.id, 'coalesced into the full sync waiting for the lock')
    -- Shown as waiting for the other process, not as running.
    t.wait_for(function()
      return manager.statusline() == 'sync demo waiting'
    end, 5000, 'the status line to show the wait: ' .. manager.statusline())
    local info = manager.get_sync_info()
    eq(full.id, info.id)
    contains(info.waiting_for, 'lock "sync-demo" is held by pid ')
    eq('waiting for another process to finish syncing demo: ' .. info.waiting_for, info.message)
    holder.stop()
    -- Once its mbsync runs it may be past the inbox: mail that arrives now
    -- and the request it prompts get a sync of their own, after it.
    t.wait_for(function()
      local info = manager.get_sync_info()
      return info.status == 'running' and info.progress ~= nil
    end, 30000, 'the full sync to report progress')
    eq(nil, manager.get_sync_info().waiting_for, 'the wait is over')
    fx.deliver('demo', 'INBOX', 3)
    local after = start('inbox', { account = 'demo' })
    ok(after.id ~= full.id, 'a new sync for a request made while mbsync runs')
    wait_done({ doomed, full, inbox, after })
    eq('cancelled', doomed.done.info.status)
    eq(true, full.done.result.success)
    eq(full.done.result, inbox.done.result, 'both callbacks got the full sync result')
    eq(2, full.done.info.requests)
    eq(true, after.done.result.success)
    ok(after.done.info.end_time >= full.done.info.end_time, 'the new sync ended after the full one')
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'), 'the mail that arrived meanwhile was pulled')

    fx.deliver('demo', 'INBOX', 2)
    local order = {}
    local unsub = manager.on_update(function(info)
      for _, s in ipairs(info.syncs) do
        order[#order + 1] = s.id .. ':' .. s.status
      end
    end)
    t.defer(unsub)
    local first = start('inbox', { account = 'demo' })
    local second = start('full', { account = 'demo' })
    ok(second.id ~= first.id)
    local third = start('inbox', { account = 'demo' })
    ok(third.id == first.id or third.id == second.id, 'a third request joins one of them')
    t.wait_for(function()
      local q = manager.get_sync_info().queue
      return #q == 1 and q[1].id == second.id
    end, 10000, 'the full sync to be listed as queued')
    -- The status line names the account once, with what waits behind.
    t.wait_for(function()
      return manager.statusline():match('^sync demo[ %d%%]* %+1 queued$') ~= nil
    end, 10000, 'the status line to show the queued sync: ' .. manager.statusline())
    wait_done({ first, second, third })
    eq(true, first.done.result.success)
    eq(true, second.done.result.success)
    ok(second.done.info.start_time >= first.done.info.start_time)
    ok(first.done.info.end_time <= second.done.info.end_time)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it(':HimalayaSync runs after another process that syncs the account, shown as waiting meanwhile', function()
    local fx = t.fixture({ '--messages', '20' })
    use(fx.mbsyncrc)
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local lock = require('himalaya.sync.lock')
    local holder = t.hold_plugin_lock('sync-demo', 60)
    local before = #manager.get_sync_info().syncs
    vim.cmd('HimalayaSync full demo')
    t.wait_for(function()
      return manager.statusline() == 'sync demo waiting'
    end, 5000, 'the status line to show the wait: ' .. manager.statusline())
    -- Asked again while it waits: the same sync answers, no second one.
    vim.wait(300)
    local waiting = #manager.get_sync_info().syncs
    vim.cmd('HimalayaSync full demo')
    eq(waiting, #manager.get_sync_info().syncs)
    eq('sync demo waiting', manager.statusline())
    holder.stop()
    t.wait_for(function()
      local info = manager.get_sync_info()
      return #info.syncs > before and info.status == 'completed'
    end, 30000, 'the sync to run once the other process is done')
    eq(waiting, #manager.get_sync_info().syncs, 'no second sync')
    eq(2, manager.get_sync_info().requests)
    -- The wait is told apart from the time the sync took.
    local result = manager.get_sync_info().result
    ok(result.waited >= 0.3 and result.waited < result.duration, vim.inspect(result))
    local msg = manager.get_sync_info().message
    ok(
      msg:match('^full sync of demo done in [%d.]+ m?s after waiting [%d.]+ m?s for its lock: 20 new, 0 uploaded$'),
      msg
    )
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))

    -- The lock held by this Neovim itself (a script's acquire_lock): no
    -- other process is syncing, and the message does not say so.
    eq(true, lock.acquire_lock('sync-demo', 0))
    local own = start('full', { account = 'demo', wait = 30 })
    t.wait_for(function()
      return manager.get_sync_info().waiting_for ~= nil
    end, 5000, 'the sync to wait')
    contains(
      manager.get_sync_info().message,
      'waiting for the lock of demo: lock "sync-demo" is held by this process (pid ' .. vim.fn.getpid()
    )
    lock.release_lock('sync-demo')
    wait_done({ own }, 30000)
    eq(true, own.done.result.success)
    ok(own.done.result.waited > 0, vim.inspect(own.done.result))
  end)

  it('a sync cancelled while it waits for another process says which sync and what it waited for', function()
    local fx = t.fixture({ '--folders', 'INBOX=1' })
    use(fx.mbsyncrc)
    local holder = t.hold_plugin_lock('sync-demo', 60)
    t.defer(holder.stop)
    local waiting = start('full', { account = 'demo', wait = 60 })
    t.wait_for(function()
      return manager.get_sync_info().waiting_for ~= nil
    end, 5000, 'the sync to wait for the lock')
    -- :HimalayaSync status says it waits, without an age that goes stale.
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local status = vim.api.nvim_exec2('HimalayaSync status', { output = true }).output
    contains(status, ('#%d full demo: waiting - waiting for another process'):format(waiting.id))
    ok(not status:find('ago)', 1, true), status)
    eq(1, manager.cancel_sync(waiting.id))
    status = vim.api.nvim_exec2('HimalayaSync status', { output = true }).output
    if not waiting.done then
      contains(status, ('#%d full demo: cancelling'):format(waiting.id))
    end
    wait_done({ waiting }, 10000)
    eq('cancelled', waiting.done.result.kind)
    eq('full sync of demo cancelled while waiting for lock "sync-demo"', waiting.done.result.error)
  end)

  it('a sync waiting for another process takes no slot: other accounts sync meanwhile', function()
    local fx = t.fixture({ '--accounts', 'demo,work', '--folders', 'INBOX=5' })
    use(fx.mbsyncrc, { max_parallel = 1 })
    local holder = t.hold_plugin_lock('sync-demo', 60)
    local waiting = start('full', { account = 'demo', wait = 60 })
    t.wait_for(function()
      return manager.statusline() == 'sync demo waiting'
    end, 5000, 'the wait: ' .. manager.statusline())
    local other = start('full', { account = 'work' })
    wait_done({ other }, 30000)
    eq(true, other.done.result.success, other.done.result.error)
    eq(nil, waiting.done, 'still waiting')
    holder.stop()
    wait_done({ waiting }, 30000)
    eq(true, waiting.done.result.success, waiting.done.result.error)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    eq(fx.ids('work', 'server'), fx.ids('work', 'local'))
  end)

  it('a request merged into another sync gets at least the lock wait it asked for', function()
    local fx = t.fixture({ '--messages', '100' })
    use(fx.mbsyncrc)
    -- Another process holds the account for 4 s.
    t.hold_plugin_lock('sync-demo', 4)
    -- An inbox sync waits 1 s for the lock; a full one (which it does not
    -- cover) is queued behind it, asking for no wait.
    local short = start('inbox', { account = 'demo', wait = 1 })
    local full = start('full', { account = 'demo' })
    ok(full.id ~= short.id)
    -- A full request that would wait 60 s joins the queued full sync,
    -- which now waits 60 s; an inbox one joins the inbox sync waiting for
    -- the lock, which now waits 60 s from then instead of giving up.
    local patient = start('full', { account = 'demo', wait = 60 })
    local inbox = start('inbox', { account = 'demo', wait = 60 })
    eq(full.id, patient.id, 'joined the queued full sync')
    eq(short.id, inbox.id, 'joined the inbox sync waiting for the lock')
    wait_done({ short, full, patient, inbox }, 30000)
    eq(true, short.done.result.success, vim.inspect(short.done.info.error))
    eq(2, short.done.info.requests)
    eq(true, full.done.result.success, vim.inspect(full.done.info.error))
    eq(2, full.done.info.requests)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it('a request that joins a sync before its first lock try gets its lock wait too', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Café=3' })
    -- A folder beyond ASCII makes the sync ask mbsync --version first,
    -- which takes 1.5 s here: the sync runs, not yet trying the lock.
    local wrapper = t.tmpdir() .. '/mbsync'
    t.write(wrapper, '#!/bin/sh\nif [ "$1" = --version ]; then sleep 1.5; fi\nexec mbsync "$@"\n')
    vim.fn.setfperm(wrapper, 'rwx------')
    use(fx.mbsyncrc, { mbsync = { cmd = wrapper } })
    t.hold_plugin_lock('sync-demo', 3)
    local eager = start('folders', { account = 'demo', folders = { 'Café' } })
    vim.wait(300)
    local running = vim.iter(manager.get_sync_info().syncs):find(function(i)
      return i.id == eager.id
    end)
    eq('running', running and running.status)
    local patient = start('folders', { account = 'demo', folders = { 'Café' }, wait = 30 })
    eq(eager.id, patient.id, 'joined the running sync')
    wait_done({ eager, patient }, 30000)
    eq(true, patient.done.result.success, vim.inspect(patient.done.info.error))
    eq(3, #fx.ids('demo', 'local')['Café'])
  end)

  it('syncs two accounts in parallel: both mbsyncs run at once', function()
    -- Behind a link with 20 ms round trips (a relay delaying each way by
    -- 10 ms), as real servers are: the syncs wait on the network, not CPU.
    local fx = t.fixture({ '--accounts', 'demo,work', '--folders', 'INBOX=200,Work=100,Sent=100' })
    local port = t.closed_port()
    t.relay(port, fx.port, 10)
    use(t.mbsyncrc_on_port(fx, port, 'slow'))
    local started = uv.hrtime()
    wait_done({ start('full', { account = 'demo' }) })
    wait_done({ start('full', { account = 'work' }) })
    local sequential = (uv.hrtime() - started) / 1e9
    wipe_local(fx)
    -- Whether they overlap is asserted; how much faster that is (load on
    -- the machine decides it) is only shown, and measured by `make bench`.
    local most = 0
    local unsub = manager.on_update(function(info)
      local running = 0
      for _, s in ipairs(info.syncs) do
        running = running + ((s.status == 'running' and s.progress) and 1 or 0)
      end
      most = math.max(most, running)
    end)
    t.defer(unsub)
    started = uv.hrtime()
    local a, b = start('full', { account = 'demo' }), start('full', { account = 'work' })
    wait_done({ a, b })
    local parallel = (uv.hrtime() - started) / 1e9
    eq(true, a.done.result.success)
    eq(true, b.done.result.success)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    eq(fx.ids('work', 'server'), fx.ids('work', 'local'))
    io.stdout:write(
      ('     sequential %.2f s, parallel %.2f s (%.2fx)\n'):format(sequential, parallel, parallel / sequential)
    )
    eq(2, most, 'both mbsyncs reported progress at the same time')
  end)

  it('max_parallel = 1 runs accounts one after another', function()
    local fx = t.fixture({ '--accounts', 'demo,work', '--folders', 'INBOX=50' })
    use(fx.mbsyncrc, { max_parallel = 1 })
    local a, b = start('full', { account = 'demo' }), start('full', { account = 'work' })
    t.wait_for(function()
      return #manager.get_sync_info().queue == 1 or b.done
    end, 10000, 'the second account to wait')
    wait_done({ a, b })
    ok(b.done.info.end_time >= a.done.info.end_time)
    ok(b.done.result.success and a.done.result.success)
  end)

  it('a max_parallel raised by setup() starts the queued syncs at once', function()
    local fx = t.fixture({ '--accounts', 'demo,work', '--messages', '5' })
    -- mbsync takes 3 s, so the second account is still queued when the
    -- limit goes up.
    local slow = t.tmpdir() .. '/slow-mbsync'
    t.write(slow, '#!/bin/sh\nsleep 3\nexec mbsync "$@"\n')
    vim.uv.fs_chmod(slow, 448)
    use(fx.mbsyncrc, { max_parallel = 1, mbsync = { cmd = slow } })
    local a, b = start('full', { account = 'demo' }), start('full', { account = 'work' })
    t.wait_for(function()
      return #manager.get_sync_info().queue == 1
    end, 10000, 'the second account to wait')
    t.setup_for_test({ max_parallel = 2 })
    -- Well before the first sync's 3 s are over.
    t.wait_for(function()
      return #manager.get_sync_info().queue == 0
    end, 2500, 'the queued sync to start')
    wait_done({ a, b })
    ok(b.done.result.success and a.done.result.success)
    ok(b.done.info.start_time < a.done.info.end_time, 'both ran at once')
  end)
end)

describe('parallel folders', function()
  it('max_connections runs one full sync as several mbsync on disjoint folders, reported as one', function()
    local fx = t.fixture({ '--folders', 'INBOX=150,Sent=150,Archive=150,Work=150,Work/Projects=150,Drafts=150' })
    local port = t.closed_port()
    t.relay(port, fx.port, 10)
    local rc = t.mbsyncrc_on_port(fx, port, 'slow')
    use(rc, { max_connections = 3 })
    local most = t.watch_processes(function(cmd)
      return cmd:find('mbsync ', 1, true) ~= nil and cmd:find(rc, 1, true) ~= nil
    end)
    local progress = {}
    local s = start('full', { account = 'demo' })
    t.defer(manager.on_update(function(info)
      local p = info.syncs[#info.syncs].progress
      if p and p.percent then
        progress[#progress + 1] = p.percent
      end
    end))
    wait_done({ s })
    eq(true, s.done.result.success, s.done.result.error)
    eq(900, s.done.result.pulled)
    eq(3, most(), 'three mbsync processes at once')
    eq(100, progress[#progress])
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it('a split sync starts from the last box list and corrects it when folders come and go', function()
    local fx = t.fixture({ '--folders', 'INBOX=20,Sent=20,Archive=20,Drafts=20' })
    use(fx.mbsyncrc, { max_connections = 2 })
    local s = start('full', { account = 'demo' })
    wait_done({ s })
    eq(true, s.done.result.success, s.done.result.error)
    -- Drafts goes away on both sides; a new server folder appears.
    local acct = fx.accounts.demo
    vim.fn.delete(acct.server_maildir .. '/' .. fx.folder_dirs.Drafts.server, 'rf')
    vim.fn.delete(acct.local_maildir .. '/' .. fx.folder_dirs.Drafts['local'], 'rf')
    fx.deliver('demo', 'Fresh', 7)
    s = start('full', { account = 'demo' })
    wait_done({ s })
    eq(true, s.done.result.success, s.done.result.error)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    local here = fx.ids('demo', 'local')
    eq(7, #here.Fresh)
    eq(nil, here.Drafts)
    -- And the corrected list is what the next sync starts from.
    s = start('full', { account = 'demo' })
    wait_done({ s })
    eq(true, s.done.result.success, s.done.result.error)
  end)

  it("a throttled account's split sync starts from the last box list too", function()
    local fx = t.fixture({ '--folders', 'INBOX=5,Sent=5,Archive=5' })
    -- mbsync, noting each run: LIST for a box listing (0.5 s late, so that
    -- a listing beside the parts is noted after them), else SYNC.
    local dir = t.tmpdir()
    local wrapper = dir .. '/mbsync'
    t.write(
      wrapper,
      ([[#!/bin/sh
for a in "$@"; do
  if [ "$a" = -l ]; then sleep 0.5; echo LIST >> %s/runs; exec mbsync "$@"; fi
done
echo SYNC >> %s/runs
exec mbsync "$@"
]]):format(dir, dir)
    )
    vim.fn.setfperm(wrapper, 'rwx------')
    use(fx.mbsyncrc, {
      max_connections = 2,
      mbsync = { cmd = wrapper },
      accounts = { demo = { throttle = { kbps = 100000 } } },
    })
    local s = start('full', { account = 'demo' })
    wait_done({ s })
    eq(true, s.done.result.success, s.done.result.error)
    local before = #vim.split(t.read(dir .. '/runs'), '\n', { trimempty = true })
    s = start('full', { account = 'demo' })
    wait_done({ s })
    eq(true, s.done.result.success, s.done.result.error)
    local runs = vim.split(t.read(dir .. '/runs'), '\n', { trimempty = true })
    eq('SYNC', runs[before + 1], 'the second sync started its parts before listing: ' .. vim.inspect(runs))
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it('a split sync whose box listing alone fails keeps what its parts synced', function()
    local fx = t.fixture({ '--folders', 'INBOX=20,Sent=20,Archive=20' })
    -- mbsync, except that listing boxes (-l) fails once `no-list` exists,
    -- as when the server refuses one connection more than the parts use.
    local dir = t.tmpdir()
    local wrapper = dir .. '/mbsync'
    t.write(
      wrapper,
      ([[#!/bin/sh
for a in "$@"; do
  if [ "$a" = -l ] && [ -e %s/no-list ]; then
    echo 'IMAP error: BYE [ALERT] Too many simultaneous connections' >&2
    exit 1
  fi
done
exec mbsync "$@"
]]):format(dir)
    )
    vim.fn.setfperm(wrapper, 'rwx------')
    use(fx.mbsyncrc, { max_connections = 2, mbsync = { config = fx.mbsyncrc, cmd = wrapper } })
    local s = start('full', { account = 'demo' })
    wait_done({ s })
    eq(true, s.done.result.success, s.done.result.error)
    t.write(dir .. '/no-list', '')
    fx.deliver('demo', 'Sent', 3)
    s = start('full', { account = 'demo' })
    wait_done({ s })
    eq(true, s.done.result.success, s.done.result.error)
    eq(3, s.done.result.pulled)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)
end)

describe('auth', function()
  it('an auth failure asks the account refresh function and retries once', function()
    local fx = t.fixture({ '--folders', 'INBOX=5' })
    local rc = fx.dir .. '/mbsyncrc-auth'
    local good = t.read(fx.mbsyncrc)
    t.write(rc, (good:gsub('\nPass [^\n]*', '\nPass stale-token')))
    local calls = {}
    t.setup_for_test({
      mbsync = { config = rc },
      notify = false,
      retry = { max_attempts = 0 },
      accounts = {
        demo = {
          refresh = function(account, done)
            calls[#calls + 1] = account
            t.write(rc, good)
            done(true)
          end,
        },
      },
    })
    local s = start('full', { account = 'demo' })
    wait_done({ s })
    eq({ 'demo' }, calls)
    eq(true, s.done.result.success, s.done.result.error)
    eq(2, s.done.result.attempts)

    -- A refresh that does not help: a clear re-authorization message.
    t.write(rc, (good:gsub('\nPass [^\n]*', '\nPass stale-token')))
    require('himalaya.sync').setup({
      mbsync = { config = rc },
      notify = false,
      retry = { max_attempts = 0 },
      accounts = { demo = {
        refresh = function(_, done)
          done(true)
        end,
      } },
    })
    s = start('full', { account = 'demo' })
    wait_done({ s })
    eq('auth', s.done.result.kind)
    contains(s.done.result.error, 're-authorization needed')

    -- A refresh that fails says why.
    require('himalaya.sync').setup({
      mbsync = { config = rc },
      notify = false,
      retry = { max_attempts = 0 },
      accounts = {
        demo = {
          refresh = function(_, done)
            done(false, 'invalid_grant: token revoked')
          end,
        },
      },
    })
    s = start('full', { account = 'demo' })
    wait_done({ s })
    eq('auth', s.done.result.kind)
    contains(s.done.result.error, 'invalid_grant: token revoked')
    ok(not s.done.result.error:find('stale%-token'), 'no secret in the message')

    -- From Vimscript: a Funcref reaches Lua as vim.NIL and is refused with
    -- the way out; the function's name works as a Lua function does.
    require('himalaya.sync').setup({})
    t.defer(function()
      vim.g.himalaya_sync = nil
      vim.cmd('delfunction! HimalayaSyncTestRefresh')
      _G.himalaya_sync_test_fix = nil
    end)
    _G.himalaya_sync_test_fix = function()
      t.write(rc, good)
    end
    vim.cmd([[
      function! HimalayaSyncTestRefresh(account, Done) abort
        let g:himalaya_sync_test_refreshed = a:account
        call v:lua.himalaya_sync_test_fix()
        " As the help's example answers: a Number (1), Vimscript's true.
        call system(['true'])
        call a:Done(v:shell_error == 0, 'the refresh failed')
      endfunction
    ]])
    local function let(refresh)
      vim.cmd.let(
        ('g:himalaya_sync = {"mbsync": {"config": %s}, "notify": v:false, "retry": {"max_attempts": 0}, '):format(
          vim.fn.string(rc)
        ) .. ('"accounts": {"demo": {"refresh": %s}}}'):format(refresh)
      )
    end
    let('function("HimalayaSyncTestRefresh")')
    local id, why, kind = require('himalaya.sync.manager').start_sync('full', { account = 'demo' })
    eq(nil, id)
    eq('config', kind)
    contains(
      why,
      "himalaya_sync.accounts.demo.refresh: expected a function(account, done), or in Vimscript the function's name ('refresh': 'MyRefresh')"
    )
    let('"HimalayaSyncTestRefresh"')
    s = start('full', { account = 'demo' })
    wait_done({ s })
    eq('demo', vim.g.himalaya_sync_test_refreshed)
    eq(true, s.done.result.success, s.done.result.error)
    eq(2, s.done.result.attempts)
  end)
end)

describe('throttle', function()
  it('a throttled account syncs through the relay at the configured rate, intact', function()
    local fx = t.fixture({ '--folders', 'INBOX=200' })
    local bytes = 0
    for name in vim.fs.dir(fx.accounts.demo.server_maildir .. '/cur') do
      bytes = bytes + vim.uv.fs_stat(fx.accounts.demo.server_maildir .. '/cur/' .. name).size
    end
    for name in vim.fs.dir(fx.accounts.demo.server_maildir .. '/new') do
      bytes = bytes + vim.uv.fs_stat(fx.accounts.demo.server_maildir .. '/new/' .. name).size
    end
    local kbps = 40
    use(fx.mbsyncrc, { accounts = { demo = { throttle = { kbps = kbps } } } })
    local started = uv.hrtime()
    local s = start('full', { account = 'demo' })
    local tunnel = t.watch_processes(function(cmd)
      return cmd:find('himalaya-sync relay --kbps ' .. kbps, 1, true) ~= nil
    end)
    wait_done({ s }, 120000)
    local secs = (uv.hrtime() - started) / 1e9
    eq(true, s.done.result.success, s.done.result.error)
    eq(1, tunnel(), 'mbsync went through the relay')
    local floor = bytes / 1024 / kbps
    ok(
      secs >= floor,
      ('%.1f kB at %d kB/s took %.2f s (at least %.2f s expected)'):format(bytes / 1024, kbps, secs, floor)
    )
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    -- The derived mbsyncrc (which holds the password) is gone.
    eq({}, vim.fn.glob(vim.fn.stdpath('state') .. '/himalaya-sync/mbsyncrc-throttled-*', false, true))
  end)

  it('without the himalaya-sync program a throttled sync fails at once, saying how to get it', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    use(fx.mbsyncrc, { accounts = { demo = { throttle = { kbps = 40 } } } })
    local native = require('himalaya.sync.native')
    local real = native.tool_path
    native.tool_path = function() end
    t.defer(function()
      native.tool_path = real
    end)
    local s = start('full', { account = 'demo' })
    wait_done({ s }, 30000)
    eq(false, s.done.result.success)
    eq('config', s.done.result.kind)
    contains(s.done.result.error, 'himalaya-sync program')
    contains(s.done.result.error, ':checkhealth himalaya.sync')
    eq({}, fx.ids('demo', 'local'), 'nothing was synced around the throttle')
  end)

  it('a message that takes longer than mbsync.timeout to transfer is not taken for a hang', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    -- 200 kB at 40 kB/s: about 5 s in which mbsync prints nothing, against
    -- a 2 s watchdog. mbsync keeps reading, which is what the watchdog sees.
    fx.deliver('demo', 'INBOX', 1, 200000)
    use(fx.mbsyncrc, { mbsync = { timeout = 2 }, accounts = { demo = { throttle = { kbps = 40 } } } })
    local started = uv.hrtime()
    local s = start('full', { account = 'demo' })
    wait_done({ s }, 60000)
    local secs = (uv.hrtime() - started) / 1e9
    eq(true, s.done.result.success, s.done.result.error)
    eq(1, s.done.result.attempts, 'no attempt was stopped by the watchdog')
    ok(secs >= 4, ('the transfer took %.1f s'):format(secs))
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)
end)

describe('retry', function()
  it('a server that is down and comes back: the sync succeeds with no user action', function()
    local fx = t.fixture({ '--folders', 'INBOX=30,Work=20' })
    local port = t.closed_port()
    use(
      t.mbsyncrc_on_port(fx, port, 'relay'),
      { retry = { base = 0.5, factor = 2, cap = 2, max_attempts = 6, jitter = 0 } }
    )
    local retries = 0
    local unsub = manager.on_update(function(info)
      if info.status == 'retrying' then
        retries = retries + 1
      end
    end)
    t.defer(unsub)
    local s = start('full', { account = 'demo' })
    t.wait_for(function()
      return manager.get_sync_info().status == 'retrying'
    end, 20000, 'the first retry to be scheduled')
    local info = manager.get_sync_info()
    eq('network', info.error.kind)
    ok(info.next_retry and info.attempt == 2, vim.inspect(info))
    contains(info.message, 'retrying in')
    eq(1, #info.queue)
    t.relay(port, fx.port)
    wait_done({ s }, 60000)
    eq(true, s.done.result.success, s.done.result.error)
    ok(s.done.result.attempts >= 2)
    eq(nil, s.done.info.error, 'the success cleared the error')
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    ok(retries >= 1)
  end)

  it('a waiting retry is visible and can be cancelled', function()
    local fx = t.fixture({ '--folders', 'INBOX=5' })
    use(t.mbsyncrc_on_port(fx, t.closed_port(), 'down'), { retry = { base = 30, max_attempts = 3 } })
    local s = start('full', { account = 'demo' })
    t.wait_for(function()
      return manager.get_sync_info().status == 'retrying'
    end, 20000)
    contains(require('himalaya.sync').statusline(), 'demo retry at')
    eq(1, manager.cancel_sync())
    wait_done({ s }, 5000)
    eq('cancelled', s.done.info.status)
    eq(false, manager.is_busy())
  end)

  it('config errors never retry', function()
    local fx = t.fixture({ '--folders', 'INBOX=5' })
    use(fx.mbsyncrc, { retry = { base = 0.1, max_attempts = 5 }, mbsync = { extra_args = { '--no-such-option' } } })
    local s = start('full', { account = 'demo' })
    wait_done({ s }, 20000)
    eq(false, s.done.result.success)
    eq(1, s.done.result.attempts)
  end)
end)

describe('editor integration', function()
  it('User events, listeners and notifications are observed; auto syncs are quiet', function()
    local fx = t.fixture({ '--folders', 'INBOX=300,Work=300' })
    use(fx.mbsyncrc, { notify = { start = true } })
    local events = {}
    for _, pat in ipairs({
      'HimalayaSyncStarted',
      'HimalayaSyncProgress',
      'HimalayaSyncCompleted',
      'HimalayaSyncFailed',
    }) do
      vim.api.nvim_create_autocmd('User', {
        pattern = pat,
        callback = function(ev)
          events[#events + 1] = { pat, ev.data.id, ev.data.status }
        end,
      })
    end
    -- HimalayaSyncUpdate: per event, the finished syncs its data lists.
    local ended_in = {}
    vim.api.nvim_create_autocmd('User', {
      pattern = 'HimalayaSyncUpdate',
      callback = function(ev)
        for _, s in ipairs(ev.data.syncs) do
          if s.status == 'completed' or s.status == 'error' or s.status == 'cancelled' then
            ended_in[s.id] = (ended_in[s.id] or 0) + 1
          end
        end
      end,
    })
    local notes, updates = t.notifications(), 0
    t.defer(manager.on_update(function()
      updates = updates + 1
    end))
    local status_seen
    t.defer(manager.on_update(function()
      local s = require('himalaya.sync').statusline()
      if s:find('sync demo') then
        status_seen = s
      end
    end))
    wait_done({ start('full', { account = 'demo' }) })
    eq('HimalayaSyncStarted', events[1][1])
    eq('HimalayaSyncCompleted', events[#events][1])
    ok(vim.tbl_contains(
      vim.tbl_map(function(e)
        return e[1]
      end, events),
      'HimalayaSyncProgress'
    ))
    ok(updates >= 2, 'listener called ' .. updates)
    ok(status_seen, 'the status line showed the sync')
    eq('', require('himalaya.sync').statusline())
    eq(2, #notes, vim.inspect(notes))
    contains(notes[1][1], 'started')
    eq(vim.log.levels.INFO, notes[2][2])
    contains(notes[2][1], 'done')

    -- A failure: a Failed event and an ERROR notification.
    local rc = fx.dir .. '/mbsyncrc-bad'
    t.write(rc, (t.read(fx.mbsyncrc):gsub('\nPass [^\n]*', '\nPass wrong')))
    use(rc, { retry = { max_attempts = 0 }, notify = { start = true } })
    notes = t.notifications()
    wait_done({ start('full', { account = 'demo' }) })
    eq('HimalayaSyncFailed', events[#events][1])
    eq(vim.log.levels.ERROR, notes[#notes][2])
    contains(require('himalaya.sync').statusline(), 'auth error')

    -- Auto syncs are quiet by default.
    use(fx.mbsyncrc)
    notes = t.notifications()
    local last = start('full', { account = 'demo', auto = true })
    wait_done({ last })
    eq({}, notes)

    -- Each of the three ends is in exactly one HimalayaSyncUpdate (the
    -- event carries no older history); get_sync_info() still has them.
    t.wait_for(function()
      return ended_in[last.id] ~= nil
    end, 5000, 'the last end in a HimalayaSyncUpdate')
    eq(3, vim.tbl_count(ended_in), vim.inspect(ended_in))
    local kept = {}
    for _, s in ipairs(manager.get_sync_info().syncs) do
      kept[s.id] = true
    end
    for id, n in pairs(ended_in) do
      eq(1, n, ('sync #%d ended in %d events'):format(id, n))
      ok(kept[id], ('get_sync_info() keeps sync #%d'):format(id))
    end
  end)

  it('history survives in the state folder, private, and other Neovims read it', function()
    local fx = t.fixture({ '--folders', 'INBOX=20' })
    use(fx.mbsyncrc)
    local s = start('full', { account = 'demo' })
    wait_done({ s })
    -- The history has the sync as soon as its end is told.
    local h = manager.history()
    ok(h and h.demo and (h.demo.last_sync or 0) >= s.done.info.end_time - 1e-3, vim.inspect(h))
    ok(h.demo.last_success and h.demo.last_duration)
    local file = vim.fn.stdpath('state') .. '/himalaya-sync/history.json'
    t.wait_for(function()
      local saved = uv.fs_stat(file) and vim.json.decode(t.read(file)) or {}
      return saved.demo and saved.demo.last_sync >= s.done.info.end_time - 1e-3
    end, 5000, 'the history file to have the sync')
    eq(tonumber('100600', 8), uv.fs_stat(file).mode)
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local out = vim.api.nvim_exec2('HimalayaSync info', { output = true }).output
    contains(out, 'demo: last success')
    -- Durations read naturally ("40 ms", "3.2 s"), never "0.0 s".
    ok(out:match('%(full, %d+ ms%)') or out:match('%(full, %d+%.%d s%)'), out)
    ok(
      s.done.info.message:match('done in %d+ ms: %d+ new, %d+ uploaded$')
        or s.done.info.message:match('done in %d+%.%d s: %d+ new, %d+ uploaded$'),
      s.done.info.message
    )
    ok(not out:find('0.0 s', 1, true) and not s.done.info.message:find('0.0 s', 1, true), out)
    local stdout = t.nvim_lua(([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = { mbsync = { config = %q } }
io.stdout:write(vim.json.encode(require('himalaya.sync.manager').history()))
]]):format(t.root, fx.mbsyncrc))
    local other = vim.json.decode(stdout).demo.last_success
    ok(math.abs(h.demo.last_success - other) < 1e-3, ('%s vs %s'):format(h.demo.last_success, other))
    -- The log has the sync and no password.
    ok(t.logged('full demo started') > 0)
    ok(not t.read(manager.log_path()):find(fx.accounts.demo.password, 1, true), 'no password in the log')
  end)

  it(':HimalayaSync log says when the log is off', function()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    t.setup_for_test({ log = false })
    local seen = t.notifications()
    local windows = #vim.api.nvim_list_wins()
    vim.cmd('HimalayaSync log')
    if #vim.api.nvim_list_wins() > windows then
      vim.cmd('close')
    end
    eq(1, #seen, vim.inspect(seen))
    contains(seen[1][1], 'the log is off (option log = false)')
  end)

  it('<Plug> mappings and legacy commands exist', function()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    eq('<Cmd>HimalayaSync full<CR>', vim.fn.maparg('<Plug>(HimalayaSyncFull)', 'n'))
    eq('<Cmd>HimalayaSync cancel<CR>', vim.fn.maparg('<Plug>(HimalayaSyncCancel)', 'n'))
    eq(0, vim.fn.exists(':HimalayaSyncInbox'))
    local legacy = {
      'HimalayaSyncInbox',
      'HimalayaSyncFull',
      'HimalayaCancelSync',
      'HimalayaSyncStatus',
      'HimalayaSyncInfo',
      'HimalayaAutoSyncToggle',
      'HimalayaOAuthRefresh',
      'HimalayaCleanup',
    }
    require('himalaya.sync').setup({ legacy_commands = true })
    for _, c in ipairs(legacy) do
      eq(2, vim.fn.exists(':' .. c), c)
    end
    -- They complete as :HimalayaSync does.
    t.use(t.standalone_mbsyncrc(t.tmpdir(), t.closed_port()))
    eq({ 'demo' }, vim.fn.getcompletion('HimalayaSyncFull ', 'cmdline'))
    eq({ 'demo' }, vim.fn.getcompletion('HimalayaSyncFull d', 'cmdline'))
    eq({ 'demo' }, vim.fn.getcompletion('silent HimalayaSyncFull ', 'cmdline'))
    -- They run their subcommand, and take `| command` after them.
    vim.g.after_legacy = nil
    local out = vim.api.nvim_exec2('HimalayaSyncStatus | let g:after_legacy = 1', { output = true }).output
    t.contains(out, 'himalaya-sync: ')
    eq(1, vim.g.after_legacy)
    -- setup() that turns the option off removes what the option made...
    require('himalaya.sync').setup({})
    for _, c in ipairs(legacy) do
      eq(0, vim.fn.exists(':' .. c), c)
    end
    -- ...but not what a call of legacy_commands() made.
    require('himalaya.sync').legacy_commands()
    t.defer(function()
      require('himalaya.sync').legacy_commands(false)
    end)
    require('himalaya.sync').setup({})
    eq(2, vim.fn.exists(':HimalayaSyncFull'))
  end)
end)
