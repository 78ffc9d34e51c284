-- Folder counts, the fast check and its errors, against a real dovecot and
-- real mbsync.
local t = require('helpers')
local describe, it, eq, ok = t.describe, t.it, t.eq, t.ok

local manager = require('himalaya.sync.manager')

--- Runs a check through the manager and waits for its answer.
local function check(account, folders, timeout_ms)
  local done
  local id, err, kind = manager.start_sync('check', {
    account = account,
    folders = folders,
    on_complete = function(result, info)
      done = { result = result, info = info }
    end,
  })
  if not id then
    return nil, err, kind
  end
  t.wait_for(function()
    return done ~= nil
  end, timeout_ms or 30000, 'the check to finish')
  return done.result, done.info
end

--- New messages per folder from a check result.
local function new_by_folder(result)
  local out = {}
  for _, f in ipairs(result.folders) do
    out[f.folder] = f.new
  end
  return out
end

--- A copy of the fixture's mbsyncrc with `from` replaced by `to`.
local function rc_with(fx, name, from, to)
  local rc = fx.dir .. '/mbsyncrc-' .. name
  local text, n = t.read(fx.mbsyncrc):gsub(from, to)
  assert(n > 0, 'nothing replaced in the mbsyncrc: ' .. from)
  t.write(rc, text)
  return rc
end

--- Counts as a folder -> {total, unread, flagged} map.
local function by_folder(counts)
  local out = {}
  for _, c in ipairs(counts) do
    out[c.folder] = { total = c.total, unread = c.unread, flagged = c.flagged }
  end
  return out
end

describe('folder counts', function()
  it('equal the server figures after a sync and come with the completion event', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc)
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    ok(result.success, info.message)
    local server = fx.counts('demo', 'server')
    ok(vim.tbl_count(server) >= 2, 'the fixture has several folders')
    eq(server, by_folder(info.counts), 'counts in the sync_done info')
    local counts = assert(manager.get_folder_counts('demo'))
    eq(server, by_folder(counts), 'get_folder_counts')
    eq('INBOX', counts[1].folder)
    -- Exact, and read now: a delivery synced shows up at once.
    fx.deliver('demo', 'INBOX', 2)
    result = t.sync_and_wait('inbox', { account = 'demo' })
    ok(result.success)
    eq(server.INBOX.total + 2, by_folder(assert(manager.get_folder_counts('demo'))).INBOX.total)
  end)

  it('name a bad account', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc)
    local counts, err = manager.get_folder_counts('nope')
    eq(nil, counts)
    t.contains(err, 'nope')
  end)
end)

describe('check', function()
  it('counts the messages a cancelled sync registered but never copied as new', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc)
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    fx.deliver('demo', 'Sent', 200, 100000)
    -- Throttled, so that the cancel comes while mbsync pulls: it leaves its
    -- journal, where the messages it found are registered.
    t.use(fx.mbsyncrc, { accounts = { demo = { throttle = { kbps = 2000 } } } })
    local cancelled
    local done = t.sync_and_wait('full', {
      account = 'demo',
      on_progress = function(p)
        if p.near.new.done >= 1 and not cancelled then
          cancelled = manager.cancel_sync()
        end
      end,
    })
    eq('cancelled', done.kind)
    t.use(fx.mbsyncrc)
    local missing = fx.counts('demo', 'server').Sent.total - fx.counts('demo', 'local').Sent.total
    ok(missing > 0, 'the cancel left messages to pull')
    local result, info = check('demo', { 'Sent' })
    ok(result.success, info.message)
    eq(missing, result.new)
    -- And the sync that follows pulls exactly those.
    local synced = t.sync_and_wait('full', { account = 'demo' })
    eq(missing, synced.pulled)
  end)

  it('reports exactly the delivered messages, and 0 after a sync', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc, { notify = { start = true } })
    local seen = t.notifications()
    -- Never synced: every server message is new.
    local result, info = check('demo')
    ok(result.success, info.message)
    eq('check', info.type)
    eq('himalaya-sync: check of demo started', seen[1] and seen[1][1])
    local server = fx.counts('demo', 'server')
    for folder, c in pairs(server) do
      eq(c.total, new_by_folder(result)[folder], folder .. ' before the first sync')
    end
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    result = check('demo')
    eq(0, result.new)
    eq({}, result.changed)
    fx.deliver('demo', 'INBOX', 3)
    result, info = check('demo')
    eq(3, result.new, info.message)
    eq(3, new_by_folder(result).INBOX)
    eq({ 'INBOX' }, result.changed)
    -- Limited to some folders.
    result = check('demo', { 'INBOX' })
    eq(1, #result.folders)
    eq(3, result.folders[1].new)
    local _, finfo = check('demo', { 'Nope' })
    eq('error', finfo.status)
    eq('config', finfo.error.kind)
    t.contains(finfo.message, 'Nope')
    ok(t.sync_and_wait('inbox', { account = 'demo' }).success)
    result = check('demo')
    eq(0, result.new)
  end)

  it('reports a folder deleted on the server as its error, and fails when no folder is left', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Archive=2,Sent=1' })
    t.use(fx.mbsyncrc)
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    -- A channel of its own still names Archive after the server lost it.
    local rc = fx.dir .. '/mbsyncrc-grouped'
    t.write(
      rc,
      t.read(fx.mbsyncrc)
        .. t.channel('archive', ':demo-remote:Archive', ':demo-local:Archive', 'SyncState *\n')
        .. '\nGroup both\nChannel demo\nChannel archive\n'
    )
    t.use(rc)
    vim.fn.delete(fx.accounts.demo.server_maildir .. '/.Archive', 'rf')
    fx.deliver('demo', 'INBOX', 2)
    local result, info = check('both')
    ok(result.success, info.message)
    eq('completed', info.status)
    eq(2, result.new)
    eq('INBOX', result.folders[1].folder, 'INBOX first, whichever channel syncs it')
    local by = {}
    for _, f in ipairs(result.folders) do
      by[f.folder] = f
    end
    eq(nil, by.INBOX.error)
    eq(2, by.INBOX.new)
    eq(nil, by.Sent.error)
    eq('config', by.Archive.error.kind)
    t.contains(by.Archive.error.message, "IMAP folder 'Archive' on 127.0.0.1:")
    eq({ 0, 0, 0 }, { by.Archive.new, by.Archive.total, by.Archive.unseen })
    t.contains(info.message, ": 2 new; not checked: Archive (IMAP folder 'Archive' on 127.0.0.1:")
    -- The check could not tell: a sync of the folder finds out.
    local changed = vim.deepcopy(result.changed)
    table.sort(changed)
    eq({ 'Archive', 'INBOX' }, changed)
    -- :HimalayaSync check shows the reason on the folder's line.
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local echoed
    local echo = vim.api.nvim_echo
    vim.api.nvim_echo = function(chunks, ...)
      echoed = chunks
      return echo(chunks, ...)
    end
    t.defer(function()
      vim.api.nvim_echo = echo
    end)
    vim.cmd('HimalayaSync check both')
    t.wait_for(function()
      return echoed ~= nil
    end, 10000, 'the check report')
    local line = vim.tbl_filter(function(c)
      return c[1]:find('Archive', 1, true) ~= nil
    end, echoed)[1]
    t.contains(line[1], "not checked: IMAP folder 'Archive' on 127.0.0.1:")
    eq('ErrorMsg', line[2])
    -- Nothing left to check in that channel: a failure, not "0 new".
    result, info = check('archive')
    eq(false, result.success)
    eq('error', info.status)
    eq('config', result.kind, info.message)
    t.contains(info.message, "check of archive failed: IMAP folder 'Archive' on 127.0.0.1:")
  end)

  it('classifies wrong credentials as auth', function()
    local fx = t.fixture()
    t.use(rc_with(fx, 'badpass', '\nPass [^\n]+', '\nPass "wrong"'))
    local result, info = check('demo')
    eq(false, result.success)
    eq('auth', result.kind, info.message)
    ok(not info.message:find('wrong', 1, true), 'the password is not quoted')
  end)

  it('classifies a server that is down as network', function()
    local fx = t.fixture()
    t.use(t.mbsyncrc_on_port(fx, t.closed_port(), 'down'))
    local started = vim.uv.hrtime()
    local result, info = check('demo')
    eq('network', result.kind, info.message)
    ok((vim.uv.hrtime() - started) / 1e9 < 2)
  end)

  it('classifies a silent server as timeout within the IMAPAccount Timeout', function()
    local fx = t.fixture()
    local rc = t.mbsyncrc_on_port(fx, t.silent_server(), 'silent')
    local text = t.read(rc):gsub('\nTimeout %d+', '\nTimeout 1')
    t.write(rc, text)
    t.use(rc)
    local started = vim.uv.hrtime()
    local result, info = check('demo')
    local secs = (vim.uv.hrtime() - started) / 1e9
    eq('timeout', result.kind, info.message)
    ok(secs >= 0.9 and secs < 3, ('gave up after %.1f s'):format(secs))
  end)

  it(':HimalayaSync check echoes new messages per folder, in columns', function()
    local fx = t.fixture({ '--folders', 'INBOX=2,Entwürfe=2,Work=1' })
    t.use(fx.mbsyncrc)
    vim.cmd('runtime plugin/himalaya-sync.vim')
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    fx.deliver('demo', 'INBOX', 1)
    local echoed
    local echo = vim.api.nvim_echo
    vim.api.nvim_echo = function(chunks, ...)
      echoed = table.concat(vim.tbl_map(function(c)
        return c[1]
      end, chunks))
      return echo(chunks, ...)
    end
    t.defer(function()
      vim.api.nvim_echo = echo
    end)
    local notes = t.notifications()
    require('himalaya.sync.config').setup({ notify = true })
    t.defer(function()
      require('himalaya.sync.config').setup({})
    end)
    vim.cmd('HimalayaSync check demo')
    t.wait_for(function()
      return echoed ~= nil and echoed:find('new', 1, true) ~= nil
    end, 10000, 'the check report')
    t.contains(echoed, 'demo: 1 new')
    -- Each folder's count ends in the same column, also after a name
    -- beyond ASCII.
    local ends = {}
    for line in echoed:gmatch('  [^\n]+') do
      ends[#ends + 1] = vim.fn.strdisplaywidth(line:match('^.-%d+ new'))
    end
    eq({ ends[1], ends[1], ends[1] }, ends, echoed)
    -- The report is the answer: no notification repeats it, nor a failure.
    eq({}, notes)
    fx.kill_server()
    vim.cmd('HimalayaSync check demo')
    t.wait_for(function()
      return #notes > 0
    end, 20000, 'the failed check')
    vim.wait(300)
    eq(1, #notes, vim.inspect(notes))
    eq(vim.log.levels.ERROR, notes[1][2])
  end)

  it(':HimalayaSync cancel stops a check that waits for a silent server', function()
    -- The server accepts the check's connection and never greets it: the
    -- check would wait for the account's Timeout (120 s).
    t.use(t.standalone_mbsyncrc(t.tmpdir(), t.silent_server()))
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local notes = t.notifications()
    vim.cmd('HimalayaSync check demo')
    vim.wait(300)
    eq({}, notes, 'still waiting')
    eq('sync demo checking', manager.statusline())
    local start = vim.uv.hrtime()
    vim.cmd('HimalayaSync cancel')
    t.wait_for(function()
      return #notes >= 2
    end, 3000, 'the check to end')
    ok((vim.uv.hrtime() - start) / 1e6 < 2000, 'ended at once')
    eq({ 'himalaya-sync: cancelling 1 sync', vim.log.levels.INFO }, notes[1])
    eq({ 'himalaya-sync: check of demo cancelled', vim.log.levels.WARN }, notes[2])
    eq(false, manager.is_busy())
    eq(0, manager.cancel_sync(), 'nothing left to cancel')
  end)

  it('a check that meets another kind of server is a config error, not retried', function()
    t.use(
      t.standalone_mbsyncrc(t.tmpdir(), t.silent_server('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n')),
      { retry = { base = 0.1, max_attempts = 3 } }
    )
    local result = t.sync_and_wait('check', { account = 'demo' }, 20000)
    eq('config', result.kind, result.error)
    eq(1, result.attempts, 'not retried')
    t.contains(result.error, 'did not greet like an IMAP server (check Host and Port')
  end)
end)

describe('smart auto-sync', function()
  it('plans a sync only for what changed', function()
    local plan = require('himalaya.sync.auto')._smart_plan
    eq(nil, plan('full', {}, {}))
    eq('inbox', plan('full', { 'INBOX' }, { 'INBOX' }))
    eq(nil, plan('inbox', { 'Archive' }, { 'Archive' }))
    eq('inbox', plan('inbox', { 'INBOX', 'Archive' }, { 'INBOX', 'Archive' }))
    eq(
      { 'folders', { 'INBOX', 'Sent Mail' } },
      { plan('full', { 'INBOX', '[G]/Sent Mail' }, { 'INBOX', 'Sent Mail' }) }
    )
    eq('full', plan('full', { 'INBOX', 'Archive' }, {}), 'several channels: sync whole')
    eq('full', plan('full', { 'Caf\195\169', 'INBOX' }, { 'Caf\195\169', 'INBOX' }))
  end)

  it('checks first and syncs only when the server has new mail or a folder changed here', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc, { auto_sync = { smart = true, interval = 1 / 60, accounts = { 'demo' } } })
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    local auto = require('himalaya.sync.auto')
    t.defer(auto.stop)
    -- Ticks by hand count from 0 here too (as after auto.start()).
    require('himalaya.sync.native').state('auto', {}).smart_ticks = {}
    -- What ends from now on (the manager keeps only the last 20 syncs).
    local ended = {}
    local au = vim.api.nvim_create_autocmd('User', {
      pattern = { 'HimalayaSyncCompleted', 'HimalayaSyncFailed' },
      callback = function(ev)
        ended[#ended + 1] = ev.data.type .. ':' .. ev.data.status
      end,
    })
    t.defer(function()
      pcall(vim.api.nvim_del_autocmd, au)
    end)
    -- Past the "synced recently" window (half an interval).
    vim.wait(1100)
    auto.tick()
    t.wait_for(function()
      return #ended >= 1
    end, 10000, 'the check')
    vim.wait(300)
    eq({ 'check:completed' }, ended, 'nothing new: no sync')
    fx.deliver('demo', 'INBOX', 2)
    vim.wait(1100)
    auto.tick()
    t.wait_for(function()
      return #ended >= 3
    end, 20000, 'the check and the inbox sync')
    eq({ 'check:completed', 'check:completed', 'inbox:completed' }, ended)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    -- A message of Archive read here: the check sees the change, and a
    -- sync of that folder takes it to the server.
    local dir = fx.accounts.demo.local_maildir .. '/' .. fx.folder_dirs.Archive['local']
    local unread = vim.iter(vim.fn.glob(dir .. '/{cur,new}/*', false, true)):find(function(f)
      return not vim.fs.basename(f):match(':2,%a*S')
    end)
    ok(unread, 'an unread message in Archive')
    local name = vim.fs.basename(unread):gsub(':2,.*$', '')
    assert(vim.uv.fs_rename(unread, dir .. '/cur/' .. name .. ':2,S'))
    eq(fx.counts('demo', 'server').Archive.unread - 1, fx.counts('demo', 'local').Archive.unread)
    vim.wait(1100)
    auto.tick()
    t.wait_for(function()
      return #ended >= 5
    end, 20000, 'the check and the sync of Archive')
    eq({ 'check:completed', 'folders:completed' }, { ended[4], ended[5] })
    eq(fx.counts('demo', 'local').Archive.unread, fx.counts('demo', 'server').Archive.unread)
    -- The fourth tick syncs without a check: changes of flags on the
    -- server cannot be seen by one.
    vim.wait(1100)
    auto.tick()
    t.wait_for(function()
      return #ended >= 6
    end, 20000, 'the plain sync')
    eq('full:completed', ended[6])
    -- A check cancelled (here while a hung server keeps it waiting) is not
    -- a failed check: no sync follows.
    t.use(
      t.mbsyncrc_on_port(fx, t.silent_server(), 'silent'),
      { auto_sync = { smart = true, interval = 1 / 60, accounts = { 'demo' } } }
    )
    vim.wait(1100)
    auto.tick()
    vim.wait(300)
    eq(1, require('himalaya.sync.manager').cancel_sync())
    t.wait_for(function()
      return #ended >= 7
    end, 5000, 'the cancelled check')
    vim.wait(500)
    local busy = require('himalaya.sync.manager').is_busy()
    require('himalaya.sync.manager').cancel_sync()
    eq(false, busy, 'no sync started after the cancelled check')
    eq('check:cancelled', ended[7])
    eq(7, #ended)
  end)
end)

--- The watched folders, each watcher's serial number checked and left out
--- (it depends on what ran before in this Neovim).
local function watched()
  return vim.tbl_map(function(w)
    eq('number', type(w.watcher))
    return { account = w.account, folder = w.folder, running = w.running, idle = w.idle }
  end, require('himalaya.sync.idle').list())
end

describe('IDLE push', function()
  it('a delivery starts an inbox sync within about a second', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc, { idle = { enabled = true, accounts = { 'demo' }, folders = { 'INBOX' } } })
    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    local idle = require('himalaya.sync.idle')
    idle.start()
    t.defer(idle.stop)
    t.wait_for(function()
      local l = idle.list()
      return #l == 1 and l[1].idle
    end, 10000, 'IDLE on INBOX')
    eq({ { account = 'demo', folder = 'INBOX', running = true, idle = true } }, watched())
    local lock = require('himalaya.sync.lock')
    local released, why = lock.release_lock('idle-watch')
    eq(false, released, 'a release would let a second Neovim watch')
    t.contains(why, "held by this Neovim's IDLE watcher; :HimalayaSync idle off gives it up")
    ok(lock.is_locked('idle-watch'))
    local started
    local au = vim.api.nvim_create_autocmd('User', {
      pattern = 'HimalayaSyncStarted',
      callback = function(ev)
        if ev.data.type == 'inbox' and not started then
          started = vim.uv.hrtime()
        end
      end,
    })
    t.defer(function()
      pcall(vim.api.nvim_del_autocmd, au)
    end)
    fx.deliver('demo', 'INBOX', 1)
    -- From the message in place (the delivery is a Python process, 0.1 to
    -- 0.8 s to start, more on a busy machine; the sync may start while it
    -- ends). Without IDLE the next sync would come minutes later: the
    -- bound only tells the two apart, the benchmark measures.
    local delivered = vim.uv.hrtime()
    t.wait_for(function()
      return started ~= nil
    end, 20000, 'a sync started by IDLE')
    local secs = math.max(0, started - delivered) / 1e9
    io.stdout:write(('     delivery -> inbox sync started: %.0f ms\n'):format(secs * 1000))
    ok(secs < 10, ('took %.2f s'):format(secs))
    t.wait_for(function()
      return fx.ids('demo', 'server').INBOX and vim.deep_equal(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    end, 20000, 'the message to be synced')
    idle.stop()
    eq({}, idle.list())
    eq(false, require('himalaya.sync.lock').is_locked('idle-watch'))
  end)

  it(
    'vim.g.himalaya_sync with idle.enabled starts IDLE from the plugin file, on the accounts auto-sync syncs',
    function()
      local fx = t.fixture({ '--accounts', 'demo,work', '--folders', 'INBOX=3' })
      t.use(fx.mbsyncrc, { idle = { enabled = true }, auto_sync = { accounts = { 'work' } } })
      local idle = require('himalaya.sync.idle')
      t.defer(idle.stop)
      -- A setup() that ran first (from init.lua) has the last word.
      t.setup_for_test({ idle = { enabled = false } })
      vim.g.loaded_himalaya_sync = nil
      vim.cmd('runtime plugin/himalaya-sync.vim')
      vim.wait(500)
      eq({}, idle.list())
      eq(false, require('himalaya.sync.lock').is_locked('idle-watch'))
      require('himalaya.sync.config').setup({})
      vim.g.loaded_himalaya_sync = nil
      vim.cmd('runtime plugin/himalaya-sync.vim')
      t.wait_for(function()
        local l = idle.list()
        return #l == 1 and l[1].idle
      end, 10000, 'IDLE on INBOX')
      eq({ { account = 'work', folder = 'INBOX', running = true, idle = true } }, watched())
    end
  )

  it('a Neovim that can watch no account does not keep the idle-watch lock', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc, { idle = { accounts = { 'nope' } } })
    local idle = require('himalaya.sync.idle')
    t.defer(idle.stop)
    eq(false, idle.try())
    eq(false, idle.is_watching())
    eq(false, require('himalaya.sync.lock').is_locked('idle-watch'))
  end)

  it('only one Neovim watches: the one holding the idle-watch lock', function()
    local fx = t.fixture()
    t.use(fx.mbsyncrc, { idle = { enabled = true, accounts = { 'demo' } } })
    local holder = t.hold_plugin_lock('idle-watch', 60)
    local idle = require('himalaya.sync.idle')
    t.defer(idle.stop)
    eq(false, idle.try(), 'another process watches')
    eq(false, idle.is_watching())
    holder.stop()
    eq(true, idle.try(), 'takes over once it is gone')
    t.wait_for(function()
      local l = idle.list()
      return #l == 1 and l[1].idle
    end, 10000, 'IDLE on INBOX')
  end)
end)

describe('himalaya integration', function()
  --- A himalaya config.toml with two Maildir accounts over the fixture's
  --- two channels, and one whose Maildir no channel fills.
  local function himalaya_config(fx)
    local file = t.tmpdir() .. '/config.toml'
    t.write(
      file,
      ([[
[accounts.personal]
default = true
email = "me@example.org"
backend.type = "maildir"
backend.root-dir = "%s/local/demo"

[accounts.job]
email = "me@work.example"
backend.type = "maildir"
backend.root-dir = "%s/local/work/"

[accounts.stray]
email = "x@example.org"
backend.type = "maildir"
backend.root-dir = "%s/nowhere"
]]):format(fx.dir, fx.dir, fx.dir)
    )
    vim.env.HIMALAYA_CONFIG = file
    t.defer(function()
      vim.env.HIMALAYA_CONFIG = nil
    end)
    return file
  end

  it('maps two maildir accounts to their channels; the default one is synced without an account', function()
    local fx = t.fixture({ '--accounts', 'demo,work', '--folders', 'INBOX=5,Archive=3' })
    t.use(fx.mbsyncrc)
    local file = himalaya_config(fx)
    local himalaya = require('himalaya.sync.himalaya')
    local accounts, err, config = himalaya.accounts()
    ok(accounts, err)
    eq(file, config)
    local by = {}
    for _, a in ipairs(accounts) do
      by[a.name] = a
    end
    eq({ 'demo' }, by.personal.channels)
    eq('demo', by.personal.target)
    eq(true, by.personal.default)
    eq({ 'work' }, by.job.channels)
    eq('work', by.job.target)
    eq(nil, by.stray.target)
    ok(by.stray.mismatch, 'a mismatch is explained')
    eq('demo', himalaya.default_target())
    eq(
      { 'job', 'personal' },
      (function()
        local n = himalaya.names()
        table.sort(n)
        return n
      end)()
    )

    -- No account: himalaya's default (two channels in the mbsyncrc).
    local result, info = t.sync_and_wait('full', {})
    ok(result.success, info.message)
    eq('demo', info.account)
    -- A himalaya name works where a channel name does.
    result, info = t.sync_and_wait('inbox', { account = 'job' })
    ok(result.success, info.message)
    eq('work', info.account)
    eq(fx.counts('work', 'server').INBOX, by_folder(assert(manager.get_folder_counts('job'))).INBOX)

    -- Completion offers both kinds of names.
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local names = vim.fn.getcompletion('HimalayaSync full ', 'cmdline')
    for _, n in ipairs({ 'demo', 'work', 'personal', 'job' }) do
      ok(vim.tbl_contains(names, n), n .. ' in ' .. vim.inspect(names))
    end

    -- Health names the mapping and the mismatch.
    vim.cmd('checkhealth himalaya.sync')
    local out = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
    vim.cmd('bwipeout!')
    t.contains(out, 'account personal (default) is synced by demo')
    t.contains(out, 'account job is synced by work')
    t.contains(out, 'account stray:')
  end)
end)

describe('check over XOAUTH2', function()
  local oauth_server = t.oauth_server

  it('logs in with the OAuth token of the account and counts exactly', function()
    local server = oauth_server()
    local fx = t.oauth_account(server, 'INBOX=6,Work=3')
    t.oauth_authorize(server)

    ok(t.sync_and_wait('full', { account = 'demo' }).success)
    local result, info = check('demo')
    ok(result.success, info.message)
    eq(0, result.new)
    fx.deliver('demo', 'Work', 2)
    result = check('demo')
    eq(2, result.new)
    eq({ 'Work' }, result.changed)
  end)
end)

describe('a Group of two IMAP accounts', function()
  it('counts, checks and watches the folders of both, though each has an INBOX', function()
    local fx = t.fixture({ '--accounts', 'demo,work', '--folders', 'INBOX=3,Work=2' })
    local rc = fx.dir .. '/mbsyncrc-group'
    t.write(rc, t.read(fx.mbsyncrc) .. '\nGroup all\nChannel demo\nChannel work\n')
    t.use(rc, { idle = { accounts = { 'all' }, folders = { 'INBOX' } } })
    ok(t.sync_and_wait('full', { account = 'all' }).success)

    local inboxes = vim.tbl_filter(function(c)
      return c.folder == 'INBOX'
    end, assert(manager.get_folder_counts('all')))
    table.sort(inboxes, function(a, b)
      return a.store < b.store
    end)
    eq({ 'demo-local', 'work-local' }, { inboxes[1].store, inboxes[2].store })
    eq({ 3, 3 }, { inboxes[1].total, inboxes[2].total })

    fx.deliver('work', 'INBOX', 2)
    local result = check('all')
    eq(2, result.new, vim.inspect(result.folders))
    eq({ 'INBOX' }, result.changed)
    local work = vim.iter(result.folders):find(function(f)
      return f.imap_account == 'work' and f.folder == 'INBOX'
    end)
    eq(2, work and work.new)
    -- The original plugin's fast check counts the INBOX of both.
    local status
    require('neotex.plugins.tools.himalaya.sync.mbsync').himalaya_fast_check({
      account = 'all',
      callback = function(s)
        status = s
      end,
    })
    t.wait_for(function()
      return status ~= nil
    end, 10000, 'the fast check')
    eq({ true, 2, 8 }, { status.has_new, status.new_count, status.remote_count })

    -- IDLE watches the INBOX of each; a delivery to work's syncs it.
    local idle = require('himalaya.sync.idle')
    idle.start()
    t.defer(idle.stop)
    t.wait_for(function()
      local l = idle.list()
      return #l == 2 and l[1].idle and l[2].idle
    end, 10000, 'IDLE on both INBOXes')
    eq({ 'demo', 'work' }, {
      idle.list()[1].imap_account,
      idle.list()[2].imap_account,
    })
    t.contains(idle.describe(), 'all work: INBOX (idle)')
    fx.deliver('work', 'INBOX', 1)
    t.wait_for(function()
      local here = fx.ids('work', 'local')
      return #here.INBOX == 6
    end, 20000, "the pushed sync to bring work's three new messages")
  end)
end)

describe('a Group with a channel that has no server', function()
  it('checks and watches its IMAP channel, and syncs the local one too', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Work=2' })
    -- A local copy of the mail, Maildir to Maildir, synced with the account.
    local copy = fx.dir .. '/copy'
    vim.fn.mkdir(copy, 'p')
    local rc = fx.dir .. '/mbsyncrc-group'
    t.write(
      rc,
      t.read(fx.mbsyncrc)
        .. ('\nMaildirStore copy\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n'):format(copy, copy)
        .. '\nChannel copy\nFar :demo-local:\nNear :copy:\nPatterns *\nCreate Near\nSyncState *\n'
        .. '\nGroup all\nChannel demo\nChannel copy\n'
    )
    t.use(rc, { idle = { accounts = { 'all' }, folders = { 'INBOX' } } })
    local synced = t.sync_and_wait('full', { account = 'all' })
    ok(synced.success, synced.error)
    eq(3, #fx.ids('demo', 'local').INBOX)
    local copied = vim.fn.glob(copy .. '/INBOX/*/*', false, true)
    eq(3, #copied, vim.inspect(copied))

    fx.deliver('demo', 'INBOX', 2)
    local result, info = check('all')
    ok(result.success, info.message)
    eq(2, result.new, vim.inspect(result.folders))
    eq({ 'INBOX' }, result.changed)

    local idle = require('himalaya.sync.idle')
    idle.start()
    t.defer(idle.stop)
    t.wait_for(function()
      local l = idle.list()
      return #l == 1 and l[1].idle
    end, 10000, 'IDLE on the INBOX of the IMAP channel')
    fx.deliver('demo', 'INBOX', 1)
    t.wait_for(function()
      return #fx.ids('demo', 'local').INBOX == 6
    end, 20000, 'the pushed sync to bring the three new messages')
  end)
end)
