-- IMAP IDLE in one Neovim, against a real dovecot: watchers that stop for
-- good (here: a folder missing on the server) are reported, IDLE turns
-- itself off and frees its lock when no folder is left, and
-- `:HimalayaSync idle` says what is watched.
local t = require('helpers')
local describe, it, eq, ok = t.describe, t.it, t.eq, t.ok

local idle = require('himalaya.sync.idle')
local lock = require('himalaya.sync.lock')

--- IDLE on `folders` of the fixture's account, notifications on; IDLE is
--- off again after the test.
---@return table seen notifications
local function start(fx, folders)
  t.use(fx.mbsyncrc, { notify = { enabled = true }, idle = { accounts = { 'demo' }, folders = folders } })
  t.defer(idle.stop)
  vim.cmd('runtime plugin/himalaya-sync.vim')
  local seen = t.notifications()
  vim.cmd('HimalayaSync idle on')
  return seen
end

--- The notifications whose text holds `needle`.
local function with(seen, needle)
  return vim.tbl_filter(function(n)
    return n[1]:find(needle, 1, true) ~= nil
  end, seen)
end

--- Whether nobody holds the `idle-watch` lock now.
local function lock_free()
  return not lock.is_locked('idle-watch')
end

describe('IDLE', function()
  it('a try already queued when IDLE is turned off does not start watching', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc, { idle = { accounts = { 'demo' } } })
    t.defer(idle.stop)
    -- The stop is queued before the first try, which its timer queues
    -- (both fire at once): the try then finds IDLE off.
    local timer = assert(vim.uv.new_timer())
    timer:start(0, 0, function()
      timer:close()
      vim.schedule(idle.stop)
    end)
    idle.start()
    vim.wait(1000)
    eq({ false, false }, { idle.is_enabled(), idle.is_watching() })
    eq({}, idle.list())
    ok(lock_free(), 'the idle-watch lock is held while IDLE is off')
  end)

  it('started from a libuv callback, it starts on the main loop, with its exit hook', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc, { idle = { accounts = { 'demo' } } })
    t.defer(idle.stop)
    local result
    local timer = assert(vim.uv.new_timer())
    timer:start(0, 0, function()
      timer:close()
      local started, err = pcall(idle.start)
      result = { started, err }
    end)
    t.wait_for(function()
      return result ~= nil and idle.is_enabled()
    end, 5000, 'IDLE to start')
    eq({ true, nil }, result)
    local hooks = vim.api.nvim_get_autocmds({ group = 'himalaya_sync_idle', event = 'VimLeavePre' })
    eq(1, #hooks)
  end)

  it('turns itself off and frees its lock when no folder can be watched', function()
    local fx = t.fixture()
    local seen = start(fx, { 'Nope' })
    t.wait_for(function()
      return not idle.is_enabled()
    end, 20000, 'IDLE to give up on a missing folder')
    eq(false, idle.is_watching())
    ok(lock_free(), 'the idle-watch lock is still held')
    local warned = with(seen, 'IDLE: stopped watching demo Nope')
    eq(1, #warned, vim.inspect(seen))
    eq(vim.log.levels.WARN, warned[1][2])
    t.contains(warned[1][1], "'Nope'")
    t.contains(warned[1][1], 'IDLE is off: fix that, then :HimalayaSync idle on')
    -- The status says why until it is turned on again, and so does health.
    vim.cmd('HimalayaSync idle')
    t.contains(seen[#seen][1], 'IDLE is off (stopped watching demo Nope: ')
    vim.cmd('checkhealth himalaya.sync')
    local health = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
    vim.cmd('bwipeout!')
    t.contains(health, 'WARNING IDLE is off (stopped watching demo Nope: ')
    -- Turned on again, it tries again, and says so again.
    local before = #with(seen, 'nothing left to watch')
    vim.cmd('HimalayaSync idle on')
    t.wait_for(function()
      return #with(seen, 'nothing left to watch') > before
    end, 20000, 'the second give-up to be reported')
    eq(false, idle.is_enabled())
  end)

  it('keeps watching the folders that work, and a delivery there still syncs', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc)
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    local seen = start(fx, { 'INBOX', 'Nope' })
    t.wait_for(function()
      return #with(seen, 'stopped watching demo Nope') > 0
    end, 20000, 'the missing folder to be reported')
    t.contains(with(seen, 'stopped watching demo Nope')[1][1], '(other folders are still watched)')
    t.wait_for(function()
      return idle.describe():find('demo INBOX (idle)', 1, true) ~= nil
    end, 20000, 'INBOX to be idle')
    ok(idle.is_enabled() and idle.is_watching())
    ok(not lock_free(), 'the idle-watch lock was given up while INBOX is watched')
    t.contains(idle.describe(), 'demo Nope (stopped)')
    -- The two messages may come in one pushed sync or, a moment apart, in two.
    local pulled = 0
    local au = vim.api.nvim_create_autocmd('User', {
      pattern = 'HimalayaSyncCompleted',
      callback = function(ev)
        if ev.data.type == 'inbox' then
          pulled = pulled + ev.data.result.pulled
        end
      end,
    })
    t.defer(function()
      pcall(vim.api.nvim_del_autocmd, au)
    end)
    fx.deliver('demo', 'INBOX', 2)
    t.wait_for(function()
      return pulled == 2
    end, 30000, 'the pushed inbox syncs to pull the delivery')
    -- The folder is made on the server; `idle on` watches it again.
    for _, sub in ipairs({ 'cur', 'new', 'tmp' }) do
      vim.fn.mkdir(fx.accounts.demo.server_maildir .. '/.Nope/' .. sub, 'p')
    end
    vim.cmd('HimalayaSync idle on')
    -- Every watcher of the account starts again, INBOX's too.
    t.wait_for(function()
      local now = idle.describe()
      return now:find('demo Nope (idle)', 1, true) ~= nil and now:find('demo INBOX (idle)', 1, true) ~= nil
    end, 20000, 'Nope and INBOX to be watched')
  end)

  it('a pushed sync that fails in a way the next will too is told once', function()
    local fx = t.fixture()
    -- mbsync refuses this option of the channel, which the plugin's own
    -- IMAP client does not read.
    local rc = fx.dir .. '/mbsyncrc-refused'
    t.write(rc, (t.read(fx.mbsyncrc):gsub('\nSyncState %*', '%0\nBogus yes')))
    t.use(rc, {
      notify = { enabled = true },
      idle = { accounts = { 'demo' }, folders = { 'INBOX' } },
      state_dir = t.tmpdir(),
    })
    t.defer(idle.stop)
    local seen = t.notifications()
    idle.start()
    local watching = vim.wait(10000, function()
      local l = idle.list()
      return #l == 1 and l[1].idle
    end, 10)
    ok(watching, vim.inspect({ idle.describe(), seen }))
    local history = require('himalaya.sync.manager').history
    for n = 1, 2 do
      fx.deliver('demo', 'INBOX', 1)
      t.wait_for(function()
        return ((history() or {}).demo or {}).syncs_today == n
      end, 20000, 'pushed sync ' .. n)
    end
    vim.wait(200)
    local told = with(seen, 'IDLE: inbox sync of demo failed: ')
    eq(1, #told, vim.inspect(seen))
    t.contains(told[1][1], 'Bogus')
  end)

  it('a report of a watcher that idle off/on replaced does not stop its successor', function()
    local fx = t.fixture()
    local seen = start(fx, { 'Later' })
    -- The watcher stops for good ('Later' is missing), but its report stays
    -- undelivered: the editor's loop does not run until the watcher has
    -- been replaced.
    local lib = require('himalaya.sync.native').get()
    local deadline = vim.uv.now() + 20000
    while (lib.idle_list()[1] or {}).running do
      ok(vim.uv.now() < deadline, 'the watcher of the missing folder did not stop')
      vim.uv.sleep(20)
      vim.uv.update_time()
    end
    -- os.execute, not vim.system: waiting must not run the loop either.
    local made = os.execute(
      t.python_sh(t.root .. '/tests/fixture/imap_fixture.py', 'deliver', '--dir', fx.dir, '--account', 'demo')
        .. ' --folder Later >/dev/null'
    )
    ok(made == 0 or made == true, 'cannot create the folder on the server')
    vim.cmd('HimalayaSync idle off')
    vim.cmd('HimalayaSync idle on')
    t.wait_for(function()
      return idle.describe():find('demo Later (idle)', 1, true) ~= nil
    end, 20000, 'the new watcher of Later to be idle')
    ok(idle.is_enabled() and idle.is_watching(), 'the old report turned IDLE off')
    ok(not lock_free(), 'the idle-watch lock was given up')
    eq(0, #with(seen, 'stopped watching'), vim.inspect(seen))
  end)

  it('idle on with nothing to watch tells why once, and again when asked again', function()
    local dir = t.tmpdir()
    t.use(dir .. '/no-mbsyncrc', { notify = { enabled = true } })
    t.defer(idle.stop)
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local seen = t.notifications()
    vim.cmd('HimalayaSync idle on')
    -- The timer's first try would come now, in the next turns of the loop.
    vim.wait(300)
    eq(1, #seen, vim.inspect(seen))
    t.contains(seen[1][1], 'IDLE: no account could be watched: ')
    eq(vim.log.levels.WARN, seen[1][2])
    ok(idle.is_enabled() and not idle.is_watching())
    eq(1, t.logged('no account could be watched'), 'lines in the log')
    -- Asked again: the warning is not shown twice, so the answer says why.
    vim.cmd('HimalayaSync idle on')
    eq(2, #seen, vim.inspect(seen))
    t.contains(seen[2][1], 'IDLE is on but not watching: no account could be watched: ')
  end)

  it('idle on leaves out a folder the Patterns leave out, since its new mail would sync it', function()
    local fx = t.fixture({ '--folders', 'INBOX=1,Spam=1' })
    local rc = fx.dir .. '/mbsyncrc-no-spam'
    t.write(rc, (t.read(fx.mbsyncrc):gsub('\nPatterns [^\n]*', '\nPatterns * !Spam')))
    t.use(rc, { notify = { enabled = true }, idle = { accounts = { 'demo' }, folders = { 'INBOX', 'Spam' } } })
    t.defer(idle.stop)
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local seen = t.notifications()
    vim.cmd('HimalayaSync idle on')
    eq(2, #seen, vim.inspect(seen))
    t.contains(seen[1][1], 'IDLE: demo: not watching "Spam": folder "Spam" is left out by channel "demo"\'s ')
    t.contains(seen[1][1], '`Patterns * !Spam` in ' .. rc .. ': a folders sync would download it all the same')
    t.contains(seen[2][1], 'IDLE is on, watching demo INBOX')
    eq(
      { 'INBOX' },
      vim.tbl_map(function(w)
        return w.folder
      end, idle.list())
    )
    -- Nothing left to watch: the account is not watched, and says why.
    idle.stop()
    t.use(rc, { notify = { enabled = true }, idle = { accounts = { 'demo' }, folders = { 'Spam' } } })
    vim.cmd('HimalayaSync idle on')
    t.contains(seen[#seen - 1][1], 'IDLE: cannot watch demo: not watching "Spam": folder "Spam" is left out')
    ok(not idle.is_watching(), 'IDLE watches')
  end)

  it('idle off and toggle switch it; bad arguments are refused', function()
    local fx = t.fixture()
    local seen = start(fx, { 'INBOX' })
    ok(idle.is_watching())
    vim.cmd('HimalayaSync idle off')
    eq('IDLE is off', seen[#seen][1]:gsub('^himalaya%-sync: ', ''))
    ok(lock_free(), 'the idle-watch lock is still held after idle off')
    vim.cmd('HimalayaSync idle toggle')
    ok(idle.is_enabled() and idle.is_watching(), 'toggled on, it watches at once')
    t.contains(seen[#seen][1], 'IDLE is on, watching demo INBOX')
    vim.cmd('HimalayaSync idle toggle')
    eq(false, idle.is_enabled())
    ok(lock_free(), 'the idle-watch lock is still held after toggling off')
    vim.cmd('HimalayaSync idle sometimes')
    t.contains(seen[#seen][1], 'unknown idle argument "sometimes"; expected on, off or toggle')
    eq(vim.log.levels.ERROR, seen[#seen][2])
  end)
end)
