-- Real syncs: real mbsync against a throwaway real dovecot, in this Neovim.
local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local mbsync = require('himalaya.sync.mbsync')
local manager = require('himalaya.sync.manager')

local use = t.use

local function total(ids)
  local n = 0
  for _, list in pairs(ids) do
    n = n + #list
  end
  return n
end

local function no_duplicates(ids)
  for folder, list in pairs(ids) do
    local seen = {}
    for _, id in ipairs(list) do
      if seen[id] then
        error(('duplicate %s in %s'):format(id, folder))
      end
      seen[id] = true
    end
  end
end

--- The command line completions of a Neovim using an mbsyncrc of two
--- Maildir stores (a, b) and `channels`, with these accounts settings: a
--- function from a command line to its completions, sorted.
---@param channels string
---@param accounts table
local function completing(channels, accounts)
  local rc = t.tmpdir() .. '/mbsyncrc'
  t.write(rc, 'MaildirStore a\nPath /tmp/a/\n\nMaildirStore b\nPath /tmp/b/\n\n' .. channels)
  use(rc, { accounts = accounts })
  vim.cmd('runtime plugin/himalaya-sync.vim')
  return function(line)
    local got = vim.fn.getcompletion(line, 'cmdline')
    table.sort(got)
    return got
  end
end

local function one_line(s)
  ok(type(s) == 'string' and s ~= '' and not s:find('\n'), 'one-line reason expected, got ' .. vim.inspect(s))
end

--- Events reach Lua as JSON: an absent field must be nil, never vim.NIL.
local function no_nulls(v, path)
  if v == vim.NIL then
    error(path .. ' is vim.NIL')
  end
  if type(v) == 'table' then
    for k, x in pairs(v) do
      no_nulls(x, path .. '.' .. tostring(k))
    end
  end
end

--- The keys and value types of a progress table (the folder's name, which
--- only events carry, left out).
local function shape(v)
  if type(v) ~= 'table' then
    return type(v)
  end
  local s = {}
  for k, x in pairs(v) do
    if k ~= 'box' then
      s[k] = shape(x)
    end
  end
  return s
end

--- An mbsyncrc like the fixture's, with Host/Port/Pass changed.
local function variant(fx, changes)
  local text = t.read(fx.mbsyncrc)
  for k, v in pairs(changes) do
    text = text:gsub('\n' .. k .. ' [^\n]*', '\n' .. k .. ' ' .. v)
  end
  local path = fx.dir .. '/mbsyncrc-' .. vim.fn.sha256(vim.inspect(changes)):sub(1, 8)
  t.write(path, text)
  return path
end

describe('syncing real mail', function()
  it(
    'an initial full sync brings every message of nested and non-ASCII folders, with ordered progress to 100%',
    function()
      local fx = t.fixture({ '--messages', '3000', '--nested-nonascii' })
      use(fx.mbsyncrc)
      local result, info, progress = t.sync_and_wait('full', { account = 'demo' })
      eq(true, result.success, vim.inspect(info.error))
      eq('completed', info.status)
      local server = fx.ids('demo', 'server')
      local localside = fx.ids('demo', 'local')
      eq(server, localside)
      no_duplicates(localside)
      ok(total(server) >= 3000, 'messages: ' .. total(server))
      eq(total(server), result.pulled)
      ok(#progress >= 2, 'progress events: ' .. #progress)
      local last = -1
      for i, p in ipairs(progress) do
        ok((p.percent or 0) >= last, ('progress went backwards at %d: %s < %s'):format(i, p.percent, last))
        last = p.percent or last
      end
      eq(100, progress[#progress].percent)
      -- Throttled: five progress updates a second (ten allowed here).
      ok(#progress <= math.ceil(result.duration * 10) + 3, ('%d updates in %.2f s'):format(#progress, result.duration))
      ok(info.progress.box ~= nil, 'the current box is reported')
      no_nulls(info, 'info')
      no_nulls(progress, 'progress')
      -- Every folder is counted, under mbsync's names (as the Maildir on
      -- disk has them: for 1.4, IMAP's modified UTF-7 beyond ASCII).
      local counted, folders = 0, {}
      for _, c in ipairs(info.counts) do
        counted = counted + c.total
        folders[#folders + 1] = c.folder
      end
      eq(total(server), counted)
      eq(vim.tbl_count(server), #folders)
      ok(vim.list_contains(folders, t.spelled('Entwürfe', 'Entw&APw-rfe')), vim.inspect(folders))
      ok(vim.list_contains(folders, t.spelled('Work/Café', 'Work/Caf&AOk-')), vim.inspect(folders))
      local sync_info = manager.get_sync_info()
      eq('completed', sync_info.status)
      eq('demo', sync_info.account)
      eq('full', sync_info.type)
      ok(sync_info.end_time >= sync_info.start_time)

      -- A second sync finds nothing new.
      result = t.sync_and_wait('full', { account = 'demo' })
      eq(true, result.success)
      eq(0, result.pulled)
    end
  )

  it('an on_progress that raises is told once and not called again for that sync', function()
    local fx = t.fixture({ '--messages', '3000' })
    use(fx.mbsyncrc)
    local seen = t.notifications()
    local events, calls = 0, 0
    local au = vim.api.nvim_create_autocmd('User', {
      pattern = 'HimalayaSyncProgress',
      callback = function()
        events = events + 1
      end,
    })
    t.defer(function()
      vim.api.nvim_del_autocmd(au)
    end)
    local done = t.sync_and_wait('full', {
      account = 'demo',
      on_progress = function()
        calls = calls + 1
        error('broken progress callback', 0)
      end,
    })
    eq(true, done.success, done.error)
    ok(events >= 2, 'progress events: ' .. events)
    eq(1, calls)
    local errors = vim.tbl_filter(function(n)
      return n[1]:find('error in a callback', 1, true) ~= nil
    end, seen)
    eq({ { 'himalaya-sync: error in a callback: broken progress callback', vim.log.levels.ERROR } }, errors)
  end)

  it('a sync counts as busy from the moment start_sync() accepts it', function()
    local fx = t.fixture({ '--messages', '20' })
    use(fx.mbsyncrc)
    local done
    local id = assert(manager.start_sync('full', {
      account = 'demo',
      -- What a callback does to its tables changes nothing in the manager.
      on_progress = function(p, info)
        p.percent = 'half'
        info.status = 'completed'
      end,
      on_complete = function(r, info)
        done = vim.deepcopy(r)
        r.success = false
        info.status = 'running'
      end,
    }))
    -- Before any event of the engine has been handled.
    eq(true, manager.is_busy())
    local info = manager.get_sync_info()
    eq({ id, 'demo', 'full', 'running' }, { info.id, info.account, info.type, info.status })
    eq(id, info.syncs[#info.syncs].id)
    t.wait_for(function()
      return done ~= nil
    end, 60000, 'the sync to finish')
    eq(true, done.success)
    eq(false, manager.is_busy())
    eq('completed', manager.get_sync_info().status)
    eq(true, manager.get_sync_info().result.success)
    eq('', manager.statusline())
    -- Cancelling it now, or a sync that never was, says why nothing stopped.
    eq({ 0, ('sync #%d has ended already (completed)'):format(id) }, { manager.cancel_sync(id) })
    eq({ 0, 'sync #999999 is not running or waiting in this Neovim' }, { manager.cancel_sync(999999) })
  end)

  it('inbox and selected-folder syncs touch only those folders', function()
    local fx = t.fixture({ '--folders', 'INBOX=20,Work=10,Work/Projects=10,Archive=10' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    fx.deliver('demo', 'INBOX', 3)
    fx.deliver('demo', 'Work', 4)
    fx.deliver('demo', 'Work/Projects', 5)
    local before = fx.counts('demo', 'local')

    local result = t.sync_and_wait('inbox', { account = 'demo' })
    eq(true, result.success, result.error)
    local after = fx.counts('demo', 'local')
    eq(before.INBOX.total + 3, after.INBOX.total)
    eq(before.Work.total, after.Work.total)
    eq(before['Work/Projects'].total, after['Work/Projects'].total)

    local id, err = mbsync.sync_folders('demo', { 'Work/Projects' }, {
      on_complete = function(r)
        result = r
      end,
    })
    ok(id, err)
    result = nil
    t.wait_for(function()
      return result ~= nil
    end, 60000)
    eq(true, result.success, result.error)
    after = fx.counts('demo', 'local')
    eq(before['Work/Projects'].total + 5, after['Work/Projects'].total)
    eq(before.Work.total, after.Work.total, 'Work untouched')

    -- A folder that exists on neither side: a config error that says so.
    local info
    result, info = t.sync_and_wait('folders', { account = 'demo', folders = { 'Nope' } })
    eq(false, result.success)
    eq('config', result.kind, result.error)
    ok(not info.progress or (info.progress.percent or 0) < 100, 'a failed sync is not shown as 100 %')
    t.contains(result.error, 'a folder cannot be opened: ')
    -- (mbsync 1.3 names the sides master and slave.)
    local sides = t.mbsync_version() < 104 and 'both master Nope and slave Nope'
      or 'both far side Nope and near side Nope'
    t.contains(result.error, sides .. ' cannot be opened')

    -- And a full sync brings the rest; nothing lost or doubled.
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it('a folders sync of folders beyond ASCII reaches them (mbsync 1.4 wants them as the server spells them)', function()
    local entwuerfe = t.spelled('Entwürfe', 'Entw&APw-rfe')
    local fx = t.fixture({ '--folders', 'INBOX=2,Entwürfe=3,Work/Café=2' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    fx.deliver('demo', 'Work/Café', 2)
    fx.deliver('demo', 'Entwürfe', 1)
    local before = fx.counts('demo', 'local')
    local result = t.sync_and_wait('folders', { account = 'demo', folders = { 'Work/Café' } })
    eq(true, result.success, result.error)
    local after = fx.counts('demo', 'local')
    eq(before['Work/Café'].total + 2, after['Work/Café'].total)
    eq(before['Entwürfe'].total, after['Entwürfe'].total, 'Entwürfe untouched')
    eq(true, (t.sync_and_wait('folders', { account = 'demo', folders = { 'Entwürfe' } })).success)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    -- The name get_folder_counts() gives (the Maildir's) reaches it too.
    fx.deliver('demo', 'Entwürfe', 1)
    ok(vim.tbl_contains(manager.get_folder_counts('demo'), function(c)
      return c.folder == entwuerfe
    end, { predicate = true }))
    eq(true, (t.sync_and_wait('folders', { account = 'demo', folders = { entwuerfe } })).success)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it('a folders sync of a folder the Patterns leave out is refused, and downloads nothing', function()
    local fx = t.fixture({ '--folders', 'INBOX=2,Archive=3,Entwürfe=2' })
    -- An mbsync this Neovim has not asked its version yet: a name beyond
    -- ASCII is then judged by the sync, once it knows the spelling.
    local cmd = t.tmpdir() .. '/mbsync'
    assert(vim.uv.fs_symlink(vim.fn.exepath('mbsync'), cmd))
    local patterns = '* !Archive !' .. t.spelled('Entwürfe', 'Entw&APw-rfe')
    use(variant(fx, { Patterns = patterns }), { mbsync = { cmd = cmd } })
    local id, err, kind = mbsync.sync_folders('demo', { 'Archive' })
    eq({ nil, 'config' }, { id, kind })
    contains(err, 'folder "Archive" is left out by channel "demo"\'s `Patterns ' .. patterns .. '` in ')
    contains(err, 'a folders sync would download it all the same; add it to the Patterns to sync it')
    local result = t.sync_and_wait('folders', { account = 'demo', folders = { 'Entwürfe' } })
    eq({ false, 'config' }, { result.success, result.kind })
    contains(result.error, 'folder "Entwürfe" is left out by channel "demo"')
    -- Known now: refused when asked.
    id, err = mbsync.sync_folders('demo', { 'Entwürfe' })
    eq(nil, id)
    contains(err, 'is left out by channel "demo"')
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    eq({ 'INBOX' }, vim.tbl_keys(fx.counts('demo', 'local')))
  end)

  it('cancel mid-sync stops the process group; the next sync completes with nothing lost or doubled', function()
    local fx = t.fixture({ '--messages', '6000' })
    use(fx.mbsyncrc)
    local done, cancelled, seen_shape, account_lock = nil, false, nil, nil
    local id = assert(mbsync.sync_full('demo', {
      on_progress = function(p)
        if not cancelled and p.near and p.near.new.done > 200 then
          seen_shape = shape(p)
          local lock = require('himalaya.sync.lock')
          account_lock = vim.tbl_filter(function(l)
            return l.name == 'sync-demo'
          end, lock.list_locks())[1]
          account_lock.release = { lock.release_lock('sync-demo') }
          cancelled = true
          eq(1, mbsync.cancel_sync())
        end
      end,
      on_complete = function(r, info)
        done = { r, info }
      end,
    }))
    t.wait_for(function()
      return done ~= nil
    end, 120000, 'the cancelled sync to end')
    ok(cancelled, 'cancelled during the sync')
    -- The engine's own lock on the account is shown as this Neovim's.
    ok(account_lock and account_lock.held and account_lock.mine, vim.inspect(account_lock))
    -- Not released from under the sync; the refusal says what holds it.
    eq({
      false,
      'lock sync-demo is held by a sync or token refresh of this Neovim; it is released when that ends (:HimalayaSync cancel)',
    }, account_lock.release)
    -- A parsed frame has the shape of the progress events carry (which add
    -- only the folder's name).
    local parsed = mbsync.parse_progress_line('C: 0/1  B: 0/1  F: +1/2 *0/0 #0/0 -0/0  N: +0/0 *0/0 #0/0 -0/0')
    eq(shape(parsed), seen_shape)
    eq('cancelled', done[2].status)
    eq('full sync of demo cancelled (start it again when needed)', done[2].message)
    eq(done[2].message, done[1].error)
    eq('cancelled', done[1].kind)
    eq(false, done[1].success)
    ok(id > 0)
    eq({}, t.pgrep('mbsync .*' .. fx.mbsyncrc), 'no mbsync left')
    eq(false, mbsync.get_status().running)
    local partial = total(fx.ids('demo', 'local'))
    ok(partial < 6000, 'stopped before the end: ' .. partial)

    local result = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    local localside = fx.ids('demo', 'local')
    no_duplicates(localside)
    eq(fx.ids('demo', 'server'), localside)
  end)

  it('classifies a wrong password as auth, with a one-line reason', function()
    local fx = t.fixture({ '--folders', 'INBOX=5' })
    use(variant(fx, { Pass = 'wrong-password' }))
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(false, result.success)
    eq('auth', result.kind)
    eq('error', info.status)
    no_nulls(info, 'info')
    eq(nil, info.next_retry)
    one_line(result.error)
    ok(not result.error:find('wrong%-password'), 'the password is not shown: ' .. result.error)
  end)

  it('a password nobody can type in ends the sync and the check at once, saying what to add', function()
    -- Without Pass or PassCmd, mbsync asks on its terminal and would wait
    -- there until the watchdog's time limit.
    local fx = t.fixture({ '--folders', 'INBOX=1' })
    local rc = fx.dir .. '/mbsyncrc-nopass'
    t.write(rc, (t.read(fx.mbsyncrc):gsub('\nPass [^\n]*', '')))
    use(rc, { mbsync = { timeout = 60 } })
    local started = vim.uv.hrtime()
    local result = t.sync_and_wait('full', { account = 'demo' }, 30000)
    local secs = (vim.uv.hrtime() - started) / 1e9
    eq('config', result.kind, result.error)
    eq(
      'mbsync asked for the password of demo, which nobody can type in here (give demo, an IMAPAccount or '
        .. 'IMAPStore of the mbsync config, a PassCmd, the command of a password manager or keyring that prints '
        .. 'it, or a Pass)',
      result.error
    )
    ok(secs < 10, ('answered at once, not at the 60 s time limit: %.1f s'):format(secs))
    eq({}, t.pgrep('mbsync .*' .. fx.dir), 'no mbsync left')
    result = t.sync_and_wait('check', { account = 'demo' }, 30000)
    eq('config', result.kind, result.error)
    contains(result.error, 'IMAP account "demo" has no Pass or PassCmd, and nobody can type a password in here')
  end)

  it('a PassCmd asking on the terminal ends the sync in seconds as config, saying what to set up', function()
    -- As a pinentry for the terminal would: it asks there, nobody answers.
    local fx = t.fixture({ '--folders', 'INBOX=1' })
    local rc = fx.dir .. '/mbsyncrc-passcmd'
    local passcmd = 'PassCmd "printf \'Passphrase: \' > /dev/tty; read -r p < /dev/tty; echo $p"'
    t.write(rc, (t.read(fx.mbsyncrc):gsub('\nPass [^\n]*', '\n' .. passcmd)))
    use(rc, { mbsync = { timeout = 60 }, retry = { base = 0.1, max_attempts = 3 } })
    local started = vim.uv.hrtime()
    local result = t.sync_and_wait('full', { account = 'demo' }, 30000)
    local secs = (vim.uv.hrtime() - started) / 1e9
    eq('config', result.kind, result.error)
    eq(1, result.attempts, 'not retried')
    one_line(result.error)
    contains(
      result.error,
      'no credentials: the PassCmd (or UserCmd) of the mbsync config asked for input on a terminal'
    )
    contains(result.error, 'graphical pinentry')
    ok(secs < 15, ('in seconds, not at the 60 s limit: %.1f s'):format(secs))
    eq({}, t.pgrep('mbsync .*' .. fx.dir), 'no mbsync left')
    eq({}, t.pgrep('read -r p < /dev/tty'), 'no PassCmd left')
  end)

  it('a PassCmd that gives no answer is stopped at the time limit as auth, and not retried', function()
    local fx = t.fixture({ '--folders', 'INBOX=1' })
    local rc = fx.dir .. '/mbsyncrc-passcmd'
    t.write(rc, (t.read(fx.mbsyncrc):gsub('\nPass [^\n]*', '\nPassCmd "sleep 120; echo nothing"')))
    -- mbsync runs the PassCmd once the server has greeted it: room for a
    -- busy machine's dovecot to do that first.
    use(rc, { mbsync = { timeout = 3 }, retry = { base = 0.1, max_attempts = 3 } })
    local result = t.sync_and_wait('full', { account = 'demo' }, 30000)
    eq('auth', result.kind, result.error)
    eq(1, result.attempts, 'not retried')
    one_line(result.error)
    contains(result.error, 'no credentials: the PassCmd (or UserCmd) of the mbsync config gave no answer for 3 s')
    contains(result.error, 'run it once in a terminal')
    eq({}, t.pgrep('mbsync .*' .. fx.dir), 'no mbsync left')
    eq({}, t.pgrep('sleep 120; echo nothing'), 'no PassCmd left')
  end)

  it('a Host and Port where another kind of server answers is a config error', function()
    local fx = t.fixture({ '--folders', 'INBOX=1' })
    use(variant(fx, { Port = tostring(t.silent_server('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n')) }))
    local result = t.sync_and_wait('full', { account = 'demo' }, 30000)
    eq('config', result.kind, result.error)
    eq(1, result.attempts, 'not retried')
    contains(result.error, 'the server at that Host and Port is no IMAP server: IMAP error: unexpected reply: SSH-2.0')
  end)

  it('classifies a server that is down as network', function()
    local fx = t.fixture({ '--folders', 'INBOX=5' })
    local rc = variant(fx, { Port = tostring(t.closed_port()) })
    use(rc)
    local result = t.sync_and_wait('full', { account = 'demo' })
    eq('network', result.kind, result.error)
    one_line(result.error)
    -- Through the relay of a throttled account too (its message names
    -- HOST:PORT, which once read as a config file's FILE:LINE).
    use(rc, { accounts = { demo = { throttle = { kbps = 100 } } }, retry = { max_attempts = 0 } })
    result = t.sync_and_wait('full', { account = 'demo' })
    eq('network', result.kind, result.error)
    contains(result.error, 'cannot reach the mail server')
  end)

  it("a failed sync's notification names the sync and its account", function()
    local fx = t.fixture({ '--folders', 'INBOX=1' })
    use(fx.mbsyncrc, { mbsync = { cmd = '/nonexistent/mbsync' }, notify = { enabled = true } })
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local notes = t.notifications()
    vim.cmd('HimalayaSync full demo')
    t.wait_for(function()
      return #vim.tbl_filter(function(n)
        return n[2] == vim.log.levels.ERROR
      end, notes) > 0
    end, 20000, 'the failure')
    local failed = vim.tbl_filter(function(n)
      return n[2] == vim.log.levels.ERROR
    end, notes)
    contains(failed[1][1], 'himalaya-sync: full sync of demo failed: mbsync cannot be started: ')
  end)

  it('a missing mbsync is a config error that says how to get one', function()
    local fx = t.fixture({ '--folders', 'INBOX=1' })
    use(fx.mbsyncrc, { mbsync = { cmd = '/nonexistent/mbsync' } })
    local result = t.sync_and_wait('full', { account = 'demo' })
    eq('config', result.kind, result.error)
    eq(
      'mbsync cannot be started: /nonexistent/mbsync not found (install isync, which provides mbsync, '
        .. 'or set mbsync.cmd to its path)',
      result.error
    )
  end)

  it('a missing local mail folder is a config error that says what to fix', function()
    local fx = t.fixture({ '--folders', 'INBOX=1' })
    use(variant(fx, { Path = '"' .. t.tmpdir() .. '/nowhere/"' }))
    local result = t.sync_and_wait('full', { account = 'demo' })
    eq('config', result.kind, result.error)
    contains(result.error, 'the local mail folder cannot be opened: ')
    contains(result.error, 'fix the Path of the MaildirStore')
  end)

  it('kills a silent server connection after the configured timeout', function()
    local fx = t.fixture({ '--folders', 'INBOX=5' })
    use(variant(fx, { Port = tostring(t.silent_server()) }), { mbsync = { timeout = 2 } })
    local started = vim.uv.hrtime()
    local result = t.sync_and_wait('full', { account = 'demo' }, 30000)
    local secs = (vim.uv.hrtime() - started) / 1e9
    eq('timeout', result.kind, result.error)
    one_line(result.error)
    ok(secs < 15, ('took %.1f s'):format(secs))
    eq({}, t.pgrep('mbsync .*' .. fx.dir), 'no mbsync left')
  end)

  it('reports unknown accounts and bad arguments clearly, starting nothing', function()
    local fx = t.fixture({ '--folders', 'INBOX=5' })
    use(fx.mbsyncrc)
    local id, err, kind = mbsync.sync_full('nope')
    eq(nil, id)
    eq('config', kind)
    contains(err, '"nope"')
    contains(err, 'demo')
    id, err, kind = manager.start_sync('weekly', { account = 'demo' })
    eq({ nil, 'invalid' }, { id, kind })
    contains(err, 'weekly')
    id, err, kind = mbsync.sync_folders('demo', { '../etc' })
    eq({ nil, 'invalid' }, { id, kind })
    contains(err, '../etc')
    id, err, kind = mbsync.sync_full('demo; rm -rf ~')
    eq({ nil, 'invalid' }, { id, kind })
    id, err = mbsync.sync_full(42)
    eq(nil, id)
    contains(err, '42')
    eq(false, mbsync.get_status().running)
  end)

  it('parses progress lines of mbsync 1.3, 1.4 and 1.5', function()
    local p = mbsync.parse_progress_line('C: 1/2  B: 3/4  F: +13/13 *23/42 #0/0  N: +0/7 *0/0 #0/0')
    eq({ 1, 2, 3, 4, 13, 23, 42, 7 }, {
      p.channels.done,
      p.channels.total,
      p.boxes.done,
      p.boxes.total,
      p.far.new.done,
      p.far.flags.done,
      p.far.flags.total,
      p.near.new.total,
    })
    ok(mbsync.parse_progress_line('C: 0/1  B: 0/1  M: +1/2 *0/0 #0/0  S: +0/0 *0/0 #0/0'))
    -- The whole table, field by field (the glue builds it by hand).
    eq(
      {
        channels = { done = 0, total = 1 },
        boxes = { done = 4, total = 4 },
        far = {
          new = { done = 1, total = 2 },
          flags = { done = 3, total = 4 },
          trash = { done = 5, total = 6 },
          expunge = { done = 7, total = 8 },
        },
        near = {
          new = { done = 9, total = 10 },
          flags = { done = 11, total = 12 },
          trash = { done = 13, total = 14 },
          expunge = { done = 4294967295, total = 9999999999 },
        },
        truncated = false,
        percent = 100,
      },
      mbsync.parse_progress_line(
        'C: 0/1  B: 4/4  F: +1/2 *3/4 #5/6 -7/8  N: +9/10 *11/12 #13/14 -4294967295/9999999999'
      )
    )
    eq(true, mbsync.parse_progress_line('C: 0/1  B: 0/1  F: +1/2 *0/0 #0/0 -0/0  N: ~').truncated)
    eq(nil, mbsync.parse_progress_line('Opening far side box INBOX...'))
    eq(nil, mbsync.parse_progress_line(nil))
  end)

  it('each sync completes the accounts it takes, then the configured folders', function()
    local complete = completing(
      'Channel one\nFar :a:\nNear :b:\nPatterns *\n\nChannel two\nFar :a:Archive\nNear :b:Archive\n\n'
        .. 'Group both\nChannel one\nChannel two\n',
      { one = { folders = { 'INBOX', 'Work' } } }
    )
    eq({ 'both', 'one', 'two' }, complete('HimalayaSync full '))
    eq({ 'both', 'one', 'two' }, complete('HimalayaSync check '))
    -- two syncs Archive alone: it has no inbox to sync, nor folders to name.
    eq({ 'both', 'one' }, complete('HimalayaSync inbox '))
    -- A group's folders are refused: name the channel.
    eq({ 'one' }, complete('HimalayaSync folders '))
    eq({ 'one', 'two' }, complete('HimalayaSync repair '))
    eq({ 'INBOX', 'Work' }, complete('HimalayaSync folders one '))
    eq({ 'INBOX' }, complete('HimalayaSync folders one Work '))
    eq({}, complete('HimalayaSync folders one Work INBOX '))
    eq({ 'INBOX', 'Work' }, complete('HimalayaSync repair one '))
    eq({}, complete('HimalayaSync repair one Work '))
  end)

  it('folder names with spaces complete escaped, and the command reads them back as one name', function()
    local complete = completing(
      'Channel sp\nFar :a:\nNear :b:\nPatterns *\n',
      { sp = { folders = { 'INBOX', 'Sent Items', 'Old Sent', [[a\b]], 'x|y "z"' } } }
    )
    eq({ [[Sent\ Items]] }, complete('HimalayaSync folders sp Se'))
    eq({ [[Sent\ Items]] }, complete([[HimalayaSync folders sp Sent\]]))
    eq({ [[Sent\ Items]] }, complete([[HimalayaSync folders sp Sent\ I]]))
    eq({}, complete([[HimalayaSync folders sp Sent\ X]]))
    eq({ 'INBOX', [[Old\ Sent]], [[a\\b]], [[x\|y\ \"z\"]] }, complete([[HimalayaSync folders sp Sent\ Items ]]))
    eq({ [[x\|y\ \"z\"]] }, complete([[HimalayaSync folders sp x\|]]))
    -- After a `|`, the next command is completed.
    eq({ [[Old\ Sent]] }, complete([[HimalayaSync status | HimalayaSync repair sp O]]))
    eq({ [[a\\b]] }, complete([[HimalayaSync folders sp a\]]))
    eq({ [[a\\b]] }, complete([[HimalayaSync folders sp a\b]]))
    eq({ [[Old\ Sent]] }, complete([[HimalayaSync repair sp O]]))
    -- What completion gives is what the command syncs.
    local started = {}
    local orig = manager.start_sync
    manager.start_sync = function(type, opts)
      started[#started + 1] = { type, opts.account, opts.folders }
      return 1
    end
    t.defer(function()
      manager.start_sync = orig
    end)
    vim.cmd('HimalayaSync folders sp ' .. complete('HimalayaSync folders sp Se')[1] .. ' ' .. [[a\\b]])
    eq({ { 'folders', 'sp', { 'Sent Items', [[a\b]] } } }, started)
    -- It takes `| command` and a comment after it, as most commands do.
    vim.g.after = nil
    vim.cmd('HimalayaSync folders sp ' .. complete('HimalayaSync folders sp x')[1] .. ' | let g:after = 1 " done')
    eq({ 'folders', 'sp', { 'x|y "z"' } }, started[2])
    eq(1, vim.g.after)
  end)

  it(':HimalayaSync full/inbox/status/cancel work and complete account names', function()
    local fx = t.fixture({ '--folders', 'INBOX=5,Work=5' })
    use(fx.mbsyncrc)
    vim.cmd('runtime plugin/himalaya-sync.vim')
    eq({ 'demo' }, vim.fn.getcompletion('HimalayaSync full ', 'cmdline'))
    eq({ 'demo' }, vim.fn.getcompletion('silent HimalayaSync full ', 'cmdline'))
    eq({ 'full' }, vim.fn.getcompletion('Himal fu', 'cmdline'))
    eq({ 'demo' }, vim.fn.getcompletion('HimalayaSync folders d', 'cmdline'))
    -- Earlier tests' syncs are in the list too: wait for this one.
    local before = 0
    for _, i in ipairs(manager.get_sync_info().syncs) do
      before = math.max(before, i.id)
    end
    vim.cmd('HimalayaSync full demo')
    t.wait_for(function()
      for _, i in ipairs(manager.get_sync_info().syncs) do
        if i.id > before and i.status == 'completed' then
          return true
        end
      end
      return false
    end, 60000, 'the sync started by the command')
    local out = vim.api.nvim_exec2('HimalayaSync status', { output = true }).output
    contains(out, 'full demo: completed')
    -- The bare command shows the same.
    eq(out, vim.api.nvim_exec2('HimalayaSync', { output = true }).output)
    out = vim.api.nvim_exec2('HimalayaSync cancel', { output = true }).output
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    -- Without accounts.demo.folders, the folders synced are offered.
    eq({ 'INBOX', 'Work' }, vim.fn.getcompletion('HimalayaSync folders demo ', 'cmdline'))
    eq({ 'Work' }, vim.fn.getcompletion('HimalayaSync folders demo INBOX ', 'cmdline'))
    eq({ 'INBOX', 'Work' }, vim.fn.getcompletion('HimalayaSync repair demo ', 'cmdline'))
  end)
  it('keeps the editor responsive: a short time slice for the main thread exactly while a sync runs', function()
    local function slice()
      local pid = vim.uv.os_getpid()
      local text = t.read(('/proc/%d/task/%d/sched'):format(pid, pid))
      return tonumber(text:match('se%.slice%s*:%s*(%d+)'))
    end
    -- Earlier tests' syncs (a cancelled one ends in its own time) are
    -- over first: the slice is the editor's own.
    local function newest()
      local n = 0
      for _, i in ipairs(manager.get_sync_info().syncs) do
        n = math.max(n, i.id)
      end
      return n
    end
    t.wait_for(function()
      for _, i in ipairs(manager.get_sync_info().syncs) do
        if i.status == 'running' or i.status == 'queued' or i.status == 'retrying' then
          return false
        end
      end
      return true
    end, 30000, 'earlier syncs to end')
    local before = slice()
    if not before then
      io.stdout:write('skip: this kernel reports no per-thread slice\n')
      return
    end
    local fx = t.fixture({ '--messages', '300' })
    -- mbsync, then a second more in the sync: every progress update is
    -- handled here while the engine still counts the sync as running.
    local slow = t.tmpdir() .. '/mbsync'
    t.write(slow, ('#!/bin/sh\n%s "$@"\nrc=$?\nsleep 1\nexit $rc\n'):format(vim.fn.exepath('mbsync')))
    vim.fn.setfperm(slow, 'rwx------')
    -- Slices seen while a sync reported progress.
    local function sync_sampling()
      local seen = {}
      local last = newest()
      local stop = manager.on_update(function(info)
        -- Not the closing 100 % update: the engine sends it as the sync
        -- ends, and it may be handled here after the slice came back.
        if info.id > last and info.status == 'running' and info.progress and (info.progress.percent or 0) < 100 then
          seen[#seen + 1] = slice()
        end
      end)
      local result = t.sync_and_wait('full', { account = 'demo' })
      stop()
      eq(true, result.success)
      ok(#seen > 0, 'progress arrived')
      return seen
    end
    use(fx.mbsyncrc, { mbsync = { cmd = slow } })
    for _, s in ipairs(sync_sampling()) do
      eq(300000, s)
    end
    eq(before, slice())

    fx.deliver('demo', 'INBOX', 300)
    use(fx.mbsyncrc, { mbsync = { cmd = slow }, responsive = false })
    for _, s in ipairs(sync_sampling()) do
      eq(before, s)
    end
  end)
end)
