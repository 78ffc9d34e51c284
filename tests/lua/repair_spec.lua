-- UIDVALIDITY: a server folder is renumbered; the repair loses nothing.
local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local uv = vim.uv or vim.loop

local use = t.use

--- Renumbers a server folder the way a server that recreated it would:
--- new UIDVALIDITY, UIDs in another order (dovecot reads its uidlist anew).
local function renumber(fx, folder_dir)
  local dir = fx.accounts.demo.server_maildir .. '/' .. folder_dir
  local lines = vim.fn.readfile(dir .. '/dovecot-uidlist')
  local header = vim.split(lines[1], ' ')
  local files = {}
  for i = #lines, 2, -1 do
    local name = lines[i]:match('^%d+ (.*)$')
    if name then
      files[#files + 1] = name
    end
  end
  local v = tonumber(header[2]:sub(2)) + 1000
  local out = { ('3 V%d N%d %s'):format(v, #files + 1, header[4]) }
  for i, name in ipairs(files) do
    out[#out + 1] = ('%d %s'):format(i, name)
  end
  vim.fn.writefile(out, dir .. '/dovecot-uidlist')
  for name in vim.fs.dir(dir) do
    if name:match('^dovecot%.index') then
      uv.fs_unlink(dir .. '/' .. name)
    end
  end
end

--- A message only the local side has (written, not yet uploaded).
local function local_only(fx, folder, id)
  local path = ('%s/%s/new/%d.local-only.test'):format(fx.accounts.demo.local_maildir, folder, os.time())
  t.write(path, ('From: me@test\nTo: you@test\nSubject: local only\nMessage-ID: %s\n\nwritten offline\n'):format(id))
end

--- Edits the fixture's mbsyncrc: `pattern` (a Lua pattern) replaced by
--- `repl`, exactly once. The file is not shown when that fails: it holds
--- the fixture's password. The fixture writes isync 1.3's `Master` and
--- `Slave` in its place, so a side is best found by its store
--- (`:demo-remote:`, `:demo-local:`).
---@param fx table
---@param pattern string
---@param repl string|function
local function edit_rc(fx, pattern, repl)
  local rc, n = table.concat(vim.fn.readfile(fx.mbsyncrc), '\n'):gsub(pattern, repl)
  eq(1, n, 'the mbsyncrc has one ' .. pattern)
  t.write(fx.mbsyncrc, rc)
end

--- A fixture of `folders` synced once through a channel that keeps its
--- folders under `mine/` in its Maildir store (`Near :demo-local:mine/`),
--- INBOX left out: isync 1.5 cannot open a box mine/INBOX.
---@param folders string
---@return table fx
local function synced_under_prefix(folders)
  local fx = t.fixture({ '--folders', folders })
  edit_rc(fx, '(:demo%-local:)\n', '%1mine/\n')
  edit_rc(fx, '\nPatterns %*\n', '\nPatterns * !INBOX\n')
  use(fx.mbsyncrc)
  local first = t.sync_and_wait('full', { account = 'demo' })
  eq(true, first.success, first.error)
  return fx
end

local function no_duplicates(ids)
  for folder, list in pairs(ids) do
    local seen = {}
    for _, id in ipairs(list) do
      ok(not seen[id], ('duplicate %s in %s'):format(id, folder))
      seen[id] = true
    end
  end
end

describe('UIDVALIDITY', function()
  it('is repaired automatically without losing or doubling anything', function()
    local fx = t.fixture({ '--folders', 'INBOX=10,Work=12,Work/Projects=5' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local_only(fx, 'Work', '<local-only-1@test>')
    renumber(fx, '.Work')
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    ok(info.repair, 'the repair is reported')
    -- Nothing needs a repair any more.
    eq({}, { info.damaged, info.damaged_channel })
    eq('Work', info.repair.mailbox)
    eq(1, info.repair.restored)
    eq(1, info.repair.uploaded, 'counted from the progress of the sync after the restore')
    eq(12, info.repair.fetched, 'the fresh sync fetched the server copy of Work')
    contains(
      info.message,
      '; Work was repaired first (its UIDVALIDITY changed): 12 messages fetched afresh, 1 of 13 backed-up messages'
        .. ' were only here and went back to the server, backup kept in '
    )
    ok(vim.fn.isdirectory(info.repair.backup) == 1, 'the backup is kept')
    ok(not vim.startswith(info.repair.backup, fx.accounts.demo.local_maildir), 'backup outside the maildir')
    local server, localside = fx.ids('demo', 'server'), fx.ids('demo', 'local')
    eq(server, localside)
    no_duplicates(localside)
    ok(vim.tbl_contains(server.Work, '<local-only-1@test>'), 'the local-only message reached the server')
    eq(13, #server.Work)
    eq(5, #server['Work/Projects'], 'the nested folder is untouched')
    -- And the next sync is clean.
    result = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success)
    eq(0, result.pulled)
  end)

  it('a server that renumbered several folders has each repaired by the one sync', function()
    local fx = t.fixture({ '--folders', 'INBOX=6,Work=5,Archive=4,Sent=3,Drafts=2' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local_only(fx, 'Work', '<local-only-w@test>')
    local_only(fx, 'Archive', '<local-only-a@test>')
    -- A server moved to new storage renumbers every folder.
    for _, folder in ipairs({ '.Work', '.Archive', '.Sent', '.Drafts' }) do
      renumber(fx, folder)
    end
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    ok(info.repair, 'the repair is reported')
    -- Nothing needs a repair any more.
    eq({}, { info.damaged, info.damaged_channel })
    local server = fx.ids('demo', 'server')
    eq(server, fx.ids('demo', 'local'))
    no_duplicates(server)
    ok(vim.tbl_contains(server.Work, '<local-only-w@test>'), 'Work was repaired')
    ok(vim.tbl_contains(server.Archive, '<local-only-a@test>'), 'Archive was repaired')
    -- The message names the first three; the log has each.
    contains(info.message, '; 1 more folder was repaired first (see :HimalayaSync log)')
    local named = select(2, info.message:gsub(' was repaired first %(its', ''))
    eq(3, named, info.message)
    local log = table.concat(vim.fn.readfile(require('himalaya.sync.manager').log_path()), '\n')
    for _, folder in ipairs({ 'Work', 'Archive', 'Sent', 'Drafts' }) do
      contains(log, ('sync #%d: %s was repaired first ('):format(info.id, folder))
    end
  end)

  --- A full sync of demo repairs Work (5 messages on the server, in
  --- `on_server`, default Work), whose local-only message `id` reaches the
  --- server, once.
  ---@param fx table
  ---@param id string
  ---@param on_server? string
  local function repairs_work(fx, id, on_server)
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq('Work', info.repair.mailbox)
    eq(1, info.repair.restored)
    local server = fx.ids('demo', 'server')
    no_duplicates(server)
    local work = server[on_server or 'Work']
    eq(6, #work)
    ok(vim.tbl_contains(work, id), 'the local-only message reached the server')
  end

  it('a folder of a Maildir++ store is repaired too', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Work=5' })
    -- Maildir++ takes no Path: every folder is a dot directory in the Inbox.
    local mpp = t.tmpdir() .. '/mpp'
    edit_rc(fx, 'MaildirStore demo%-local\nPath [^\n]*\nInbox [^\n]*\nSubFolders Verbatim', function()
      return ('MaildirStore demo-local\nInbox %s\nSubFolders Maildir++'):format(mpp)
    end)
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    t.write(
      mpp .. '/.Work/new/1.local-only.test',
      'From: me@test\nSubject: local only\nMessage-ID: <local-only-mpp@test>\n\nwritten offline\n'
    )
    renumber(fx, '.Work')
    repairs_work(fx, '<local-only-mpp@test>')
    local result = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq(0, result.pulled)
  end)

  it('a channel that puts its folders under a prefix of its Maildir store is repaired too', function()
    local fx = synced_under_prefix('Work=5')
    local_only(fx, 'mine/Work', '<local-only-prefix@test>')
    renumber(fx, '.Work')
    repairs_work(fx, '<local-only-prefix@test>')
  end)

  it('a channel with a prefix on its far side (Gmail\'s "[Gmail]/") is repaired in its local folder', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Pre/Work=5' })
    -- mbsync names the far box with the prefix (`far side box Pre/Work`);
    -- the channel's box, and its local folder, is Work.
    edit_rc(fx, '(:demo%-remote:)\n', '%1"Pre/"\n')
    use(fx.mbsyncrc)
    local first = t.sync_and_wait('full', { account = 'demo' })
    eq(true, first.success, first.error)
    local_only(fx, 'Work', '<local-only-far-prefix@test>')
    renumber(fx, '.Pre.Work')
    repairs_work(fx, '<local-only-far-prefix@test>', 'Pre/Work')
  end)

  it('a folder under the inbox of a Verbatim store whose Inbox is outside its Path is repaired too', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    -- mbsync keeps INBOX/sub in the Inbox (Inbox/sub), not in Path/INBOX/sub.
    local inbox = t.tmpdir() .. '/inbox'
    edit_rc(fx, '\nInbox [^\n]*\n', ('\nInbox %s\n'):format(inbox))
    -- The fixture makes no folder under INBOX: the server makes it.
    local made = vim
      .system(
        t.python(
          '-c',
          [[
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("demo", sys.argv[2])
assert m.create("INBOX/sub")[0] == "OK"
for i in range(5):
    msg = "From: a@test\r\nMessage-ID: <sub-%d@test>\r\nSubject: s\r\n\r\nb\r\n" % i
    assert m.append("INBOX/sub", None, None, msg.encode())[0] == "OK"
]],
          tostring(fx.port),
          fx.accounts.demo.password
        ),
        { text = true }
      )
      :wait(20000)
    eq(0, made.code, made.stderr)
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    ok(vim.fn.isdirectory(inbox .. '/sub/cur') == 1, 'mbsync keeps INBOX/sub in the Inbox')
    t.write(
      inbox .. '/sub/new/1.local-only.test',
      'From: me@test\nSubject: local only\nMessage-ID: <local-only-sub@test>\n\nwritten offline\n'
    )
    renumber(fx, '.INBOX.sub')
    -- By hand: mbsync's later syncs of the whole channel refuse INBOX/sub
    -- in this layout (`near side box INBOX/sub cannot be opened`, 1.3 to
    -- 1.5), but a sync of that one box, as the repair's, reaches it.
    local result, info = t.sync_and_wait('repair', { account = 'demo', folders = { 'INBOX/sub' } })
    eq(true, result.success, result.error)
    eq('INBOX/sub', info.repair.mailbox)
    eq(1, info.repair.restored)
    local server = fx.accounts.demo.server_maildir .. '/.INBOX.sub/'
    local files =
      vim.list_extend(vim.fn.glob(server .. 'cur/*', false, true), vim.fn.glob(server .. 'new/*', false, true))
    eq(6, #files)
    local uploaded = vim.tbl_filter(function(f)
      return t.read(f):find('<local-only-sub@test>', 1, true) ~= nil
    end, files)
    eq(1, #uploaded, 'the local-only message reached the server, once')
  end)

  it('a channel that does not upload (Sync Pull) keeps the restored messages here and says so', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Work=5' })
    edit_rc(fx, '\nSyncState %*', '\nSync Pull\nSyncState *')
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local_only(fx, 'Work', '<local-only-pull@test>')
    renumber(fx, '.Work')
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq(1, info.repair.restored)
    eq(0, info.repair.uploaded)
    ok(not info.message:find('went back to the server', 1, true), info.message)
    contains(info.message, '1 of 6 backed-up messages were only here and stay only here')
    eq(5, #fx.ids('demo', 'server').Work, 'nothing uploaded')
    local here = fx.ids('demo', 'local')
    no_duplicates(here)
    eq(6, #here.Work)
    ok(vim.tbl_contains(here.Work, '<local-only-pull@test>'), 'the local-only message is kept here')
    result = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    ok(vim.tbl_contains(fx.ids('demo', 'local').Work, '<local-only-pull@test>'), 'and stays')
  end)

  it('a channel without Patterns (its one box) is repaired too', function()
    local fx = t.fixture({ '--folders', 'INBOX=8,Work=4' })
    -- The inbox alone, through a channel that names its box on each side.
    local rc = fx.dir .. '/mbsyncrc-inbox'
    t.write(
      rc,
      t.read(fx.mbsyncrc)
        .. t.channel('demo-in', ':demo-remote:INBOX', ':demo-local:INBOX', 'Create Both\nExpunge Both\nSyncState *\n')
    )
    use(rc)
    eq(true, (t.sync_and_wait('full', { account = 'demo-in' })).success)
    local_only(fx, 'INBOX', '<local-only-in@test>')
    renumber(fx, '')
    local result, info = t.sync_and_wait('full', { account = 'demo-in' })
    eq(true, result.success, result.error)
    ok(info.repair, 'the repair is reported')
    -- Nothing needs a repair any more.
    eq({}, { info.damaged, info.damaged_channel })
    eq('INBOX', info.repair.mailbox)
    eq(1, info.repair.restored)
    local server, localside = fx.ids('demo', 'server'), fx.ids('demo', 'local')
    eq(server.INBOX, localside.INBOX)
    no_duplicates(localside)
    ok(vim.tbl_contains(server.INBOX, '<local-only-in@test>'), 'the local-only message reached the server')
    eq(9, #server.INBOX)
    -- By hand, the folder the error names is the one to give.
    result, info = t.sync_and_wait('repair', { account = 'demo-in', folders = { 'INBOX' } })
    eq(true, result.success, result.error)
    contains(info.message, 'nothing to repair')
  end)

  it('a repair of a folder never synced is refused, and creates nothing', function()
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    -- Refused at once or by the sync's end: either way, kind config.
    local result, info_or_err, kind = t.sync_and_wait('repair', { account = 'demo', folders = { 'Ghost' } })
    local err = result and result.error or info_or_err
    eq('config', result and result.kind or kind)
    contains(err, 'no local folder')
    eq(nil, uv.fs_stat(fx.accounts.demo.server_maildir .. '/.Ghost'), 'nothing created on the server')
    eq(nil, uv.fs_stat(fx.accounts.demo.local_maildir .. '/Ghost'), 'nothing created here')
  end)

  it('a repair of a healthy folder only syncs it, so local changes reach the server', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Work=4' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    -- Offline: one message read, one deleted; not synced yet.
    local work = fx.accounts.demo.local_maildir .. '/Work/'
    local files = {}
    for _, sub in ipairs({ 'new', 'cur' }) do
      for name in vim.fs.dir(work .. sub) do
        files[#files + 1] = sub .. '/' .. name
      end
    end
    table.sort(files)
    eq(4, #files)
    local base = vim.fs.basename(files[1]):gsub(':2,.*$', '')
    assert(uv.fs_rename(work .. files[1], work .. 'cur/' .. base .. ':2,S'))
    assert(uv.fs_unlink(work .. files[2]))
    local backups = vim.fn.glob(vim.fn.stdpath('state') .. '/himalaya-sync/repair/*', false, true)
    local result, info = t.sync_and_wait('repair', { account = 'demo', folders = { 'Work' } })
    -- The folder synced: a success, not an error to fix.
    eq(true, result.success, result.error)
    eq('completed', info.status)
    contains(info.message, 'nothing to repair: Work of demo synced normally')
    eq(nil, info.repair)
    eq(backups, vim.fn.glob(vim.fn.stdpath('state') .. '/himalaya-sync/repair/*', false, true), 'no backup made')
    -- Nothing undone: the server has the deletion and the flag.
    eq({ total = 3, unread = 2, flagged = 0 }, fx.counts('demo', 'server').Work)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    -- Without the server, a repair does not start: nothing is moved.
    fx.kill_server()
    result, info = t.sync_and_wait('repair', { account = 'demo', folders = { 'Work' } })
    eq('network', result.kind, result.error)
    contains(info.message, 'repair of demo:Work not started: ')
    eq(backups, vim.fn.glob(vim.fn.stdpath('state') .. '/himalaya-sync/repair/*', false, true), 'no backup made')
    eq(3, #vim.fn.glob(work .. '*/*', false, true))
  end)

  it('an automatic repair that finds the folder healthy lets the sync run again', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Work=4' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    fx.deliver('demo', 'Work', 2)
    -- mbsync's first run complains about Work's UIDVALIDITY; after that it
    -- is the real one (another process repaired it meanwhile, say).
    local dir = t.tmpdir()
    local wrapper = t.script(
      dir,
      'mbsync',
      ([[
if [ ! -e %s/complained ]; then
  touch %s/complained
  echo 'Error: channel demo, far side box Work: UIDVALIDITY genuinely changed (at UID 4).'
  exit 1
fi
exec %s "$@"]]):format(dir, dir, vim.fn.exepath('mbsync'))
    )
    use(fx.mbsyncrc, { mbsync = { cmd = wrapper } })
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    -- (The new mail came with the check that found nothing to repair.)
    eq(6, fx.counts('demo', 'local').Work.total)
    eq(nil, info.repair)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
  end)

  it('a folder still refused after its automatic repair ends the sync with the command that repairs it', function()
    local fx = t.fixture({ '--folders', 'INBOX=3,Work=4' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    -- mbsync complains about Work at every full sync of the channel, but
    -- not when the repair syncs Work alone, which finds it healthy.
    local dir = t.tmpdir()
    local wrapper = t.script(
      dir,
      'mbsync',
      ([[
for a in "$@"; do
  if [ "$a" = demo ]; then
    echo 'Error: channel demo, far side box Work: UIDVALIDITY genuinely changed (at UID 4).'
    exit 1
  fi
done
exec %s "$@"]]):format(vim.fn.exepath('mbsync'))
    )
    use(fx.mbsyncrc, { mbsync = { cmd = wrapper } })
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(false, result.success)
    eq('uidvalidity', result.kind)
    contains(
      result.error,
      'again after its automatic repair; repair it without loss with :HimalayaSync repair demo Work'
    )
    eq('Work', info.damaged)
  end)

  it('with uidvalidity = "off" it is reported with the command that repairs it', function()
    local fx = t.fixture({ '--folders', 'INBOX=5,Work=6' })
    -- Synced through a group: the repair is for the folder's channel.
    local rc = fx.mbsyncrc .. '-group'
    t.write(rc, t.read(fx.mbsyncrc) .. '\nGroup all\nChannel demo\n')
    use(rc, { uidvalidity = 'off' })
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local_only(fx, 'Work', '<local-only-2@test>')
    renumber(fx, '.Work')
    local result, info = t.sync_and_wait('full', { account = 'all' })
    eq(false, result.success)
    eq('uidvalidity', result.kind)
    eq('Work', info.damaged)
    eq('demo', info.damaged_channel)
    contains(result.error, ':HimalayaSync repair demo Work')
    ok(not result.error:find('\n'))

    vim.cmd('runtime plugin/himalaya-sync.vim')
    local done
    local unsub = require('himalaya.sync.manager').on_update(function(i)
      if i.type == 'repair' and i.result then
        done = i
      end
    end)
    t.defer(unsub)
    vim.cmd('HimalayaSync repair demo Work')
    t.wait_for(function()
      return done ~= nil
    end, 60000, 'the repair')
    eq(true, done.result.success, done.result.error)
    eq(1, done.repair.restored)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local server, localside = fx.ids('demo', 'server'), fx.ids('demo', 'local')
    eq(server, localside)
    no_duplicates(localside)
    ok(vim.tbl_contains(server.Work, '<local-only-2@test>'))
  end)

  it('with uidvalidity = "ask" the user is asked, and the answer repairs it', function()
    local fx = t.fixture({ '--folders', 'INBOX=5,Work=6' })
    use(fx.mbsyncrc, { uidvalidity = 'ask' })
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local_only(fx, 'Work', '<local-only-3@test>')
    renumber(fx, '.Work')
    local asked
    local orig = vim.ui.select
    vim.ui.select = function(items, opts, on_choice)
      asked = opts.prompt
      on_choice(items[1])
    end
    t.defer(function()
      vim.ui.select = orig
    end)
    local repaired
    t.defer(require('himalaya.sync.manager').on_update(function(i)
      if i.type == 'repair' and i.result then
        repaired = i
      end
    end))
    local result = t.sync_and_wait('full', { account = 'demo' })
    eq('uidvalidity', result.kind)
    t.wait_for(function()
      return repaired ~= nil
    end, 60000, 'the repair the user agreed to')
    eq('himalaya-sync: the server renumbered demo:Work (UIDVALIDITY changed). Repair it without loss?', asked)
    eq(true, repaired.result.success, repaired.result.error)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    eq(fx.ids('demo', 'server'), fx.ids('demo', 'local'))
    no_duplicates(fx.ids('demo', 'local'))
  end)

  it('with uidvalidity = "ask", automatic syncs ask once, not at every tick', function()
    local fx = t.fixture({ '--folders', 'INBOX=5,Work=6' })
    use(fx.mbsyncrc, { uidvalidity = 'ask', notify = false })
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    renumber(fx, '.Work')
    local asked = {}
    local orig = vim.ui.select
    vim.ui.select = function(items, _, on_choice)
      asked[#asked + 1] = function(i)
        on_choice(items[i])
      end
    end
    t.defer(function()
      vim.ui.select = orig
    end)
    -- Two ticks while the question is open: one question.
    for _ = 1, 2 do
      eq('uidvalidity', (t.sync_and_wait('full', { account = 'demo', auto = true })).kind)
    end
    eq(1, #asked)
    -- "Not now": the next tick does not ask again...
    asked[1](2)
    eq('uidvalidity', (t.sync_and_wait('full', { account = 'demo', auto = true })).kind)
    eq(1, #asked)
    -- ...a sync started by hand does.
    eq('uidvalidity', (t.sync_and_wait('full', { account = 'demo' })).kind)
    eq(2, #asked)
    asked[2](2)
  end)

  it('a repair whose fresh sync fails puts the folder back as it was, and a later repair completes', function()
    local fx = t.fixture({ '--folders', 'INBOX=5,Work=6' })
    use(fx.mbsyncrc, { uidvalidity = 'off', retry = { max_attempts = 0 } })
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local_only(fx, 'Work', '<local-only-4@test>')
    renumber(fx, '.Work')
    local before = fx.ids('demo', 'local')
    local manager = require('himalaya.sync.manager')
    local function repair()
      local done
      local id = assert(manager.start_sync('repair', {
        account = 'demo',
        folders = { 'Work' },
        on_complete = function(r, info)
          done = { result = r, info = info }
        end,
      }))
      t.wait_for(function()
        return done ~= nil
      end, 60000, 'repair #' .. id)
      return done.result, done.info
    end
    -- The server cannot be reached once the folder is backed up: the
    -- repair's second mbsync (its first tells the UIDVALIDITY changed; the
    -- second syncs the box afresh) is pointed at a closed port.
    local dir = t.tmpdir()
    local wrapper = t.script(
      dir,
      'mbsync',
      ([[
n=$(cat %s/runs 2>/dev/null || echo 0); n=$((n + 1)); echo $n > %s/runs
if [ "$n" = 2 ] && [ "$1" = -c ]; then
  sed 's/^Port .*/Port %d/' "$2" > %s/unreachable.rc; shift 2
  exec %s -c %s/unreachable.rc "$@"
fi
exec %s "$@"]]):format(dir, dir, t.closed_port(), dir, vim.fn.exepath('mbsync'), dir, vim.fn.exepath('mbsync'))
    )
    use(fx.mbsyncrc, { uidvalidity = 'off', retry = { max_attempts = 0 }, mbsync = { cmd = wrapper } })
    local result = repair()
    eq(false, result.success)
    eq('network', result.kind, result.error)
    contains(result.error, 'the folder is back as it was')
    eq(before, fx.ids('demo', 'local'), 'nothing lost, nothing doubled')
    local info
    result, info = repair()
    eq(true, result.success, result.error)
    contains(info.message, 'repaired Work of demo: 6 messages fetched afresh, 1 of ')
    contains(info.message, 'backup kept in ' .. info.repair.backup)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local server = fx.ids('demo', 'server')
    eq(server, fx.ids('demo', 'local'))
    no_duplicates(server)
    ok(vim.tbl_contains(server.Work, '<local-only-4@test>'), 'the local-only message reached the server')
  end)
end)

--- The file of the message with mbsync UID `uid` in a local folder.
local function with_uid(fx, folder, uid)
  local dir = fx.accounts.demo.local_maildir .. '/' .. folder
  for _, sub in ipairs({ 'cur', 'new' }) do
    for name in vim.fs.dir(dir .. '/' .. sub) do
      if name:match(',U=' .. uid .. '[:,]') then
        return dir .. '/' .. sub .. '/' .. name
      end
    end
  end
  error(('no message with UID %d in %s'):format(uid, folder))
end

--- Moves a local message to another folder as a mail client that keeps
--- the file name (and mbsync's ,U= in it) does; returns its Message-ID.
local function move_keeping_name(fx, path, folder)
  local id = t.read(path):match('\n[Mm]essage%-I[Dd]:%s*(%S+)')
  local to = ('%s/%s/cur/%s'):format(fx.accounts.demo.local_maildir, folder, vim.fs.basename(path))
  assert(uv.fs_rename(path, to))
  return id
end

describe('messages a mail client moved keeping their mbsync UID', function()
  it('are repaired without loss: the folder they clash in, and the one whose numbering they pass', function()
    local fx = t.fixture({ '--folders', 'INBOX=8,Archive=5,Sent=3' })
    use(fx.mbsyncrc)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    local all = fx.ids('demo', 'server')
    -- UID 2 of INBOX into Archive, which has its own UID 2.
    local moved = move_keeping_name(fx, with_uid(fx, 'INBOX', 2), 'Archive')
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    ok(info.repair, 'the repair is reported')
    -- Nothing needs a repair any more.
    eq({}, { info.damaged, info.damaged_channel })
    eq('Archive', info.repair.mailbox)
    contains(info.message, "Archive was repaired first (its local messages clashed with mbsync's numbering)")
    local server = fx.ids('demo', 'server')
    eq(server, fx.ids('demo', 'local'))
    no_duplicates(server)
    ok(vim.tbl_contains(server.Archive, moved), 'the moved message is in Archive on the server')
    ok(not vim.tbl_contains(server.INBOX, moved), 'and no longer in INBOX')
    eq(6, #server.Archive)
    eq(7, #server.INBOX)

    -- UID 8 of INBOX into Sent, whose highest UID is 3.
    moved = move_keeping_name(fx, with_uid(fx, 'INBOX', 8), 'Sent')
    result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq('Sent', info.repair.mailbox)
    server = fx.ids('demo', 'server')
    eq(server, fx.ids('demo', 'local'))
    no_duplicates(server)
    ok(vim.tbl_contains(server.Sent, moved), 'the moved message is in Sent on the server')
    eq(4, #server.Sent)
    -- Nothing lost anywhere: the same messages, only in other folders.
    local function every(ids)
      local list = {}
      for _, l in pairs(ids) do
        vim.list_extend(list, l)
      end
      table.sort(list)
      return list
    end
    eq(every(all), every(server))
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success, 'the next sync is clean')
  end)

  it('are repaired in a channel with a prefix on its Maildir side, which mbsync names with the prefix', function()
    local fx = synced_under_prefix('Other=8,Archive=5')
    -- mbsync opens `near side box mine/Archive`; the channel's box is Archive.
    local moved = move_keeping_name(fx, with_uid(fx, 'mine/Other', 2), 'mine/Archive')
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq('Archive', info.repair.mailbox)
    local server = fx.ids('demo', 'server')
    no_duplicates(server)
    ok(vim.tbl_contains(server.Archive, moved), 'the moved message is in Archive on the server')
    eq(6, #server.Archive)
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success, 'the next sync is clean')
  end)

  it("a throttled account's repair runs mbsync throttled too, by itself and by hand", function()
    local fx = t.fixture({ '--folders', 'INBOX=4,Archive=3' })
    local dir = t.tmpdir()
    -- Notes the mbsyncrc of every run (`mbsync -c RC ...`).
    local wrapper =
      t.script(dir, 'mbsync', ('echo "$2" >> %s/configs\nexec %s "$@"'):format(dir, vim.fn.exepath('mbsync')))
    use(fx.mbsyncrc, { accounts = { demo = { throttle = { kbps = 100000 } } }, mbsync = { cmd = wrapper } })
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    move_keeping_name(fx, with_uid(fx, 'INBOX', 1), 'Archive')
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    ok(info.repair, 'the repair is reported')
    -- Nothing needs a repair any more.
    eq({}, { info.damaged, info.damaged_channel })
    result = t.sync_and_wait('repair', { account = 'demo', folders = { 'Archive' } })
    eq(true, result.success, result.error)
    local configs = vim.fn.readfile(dir .. '/configs')
    -- Sync; the sync that fails, the repair's first try, its fresh sync
    -- and its upload, the sync again; the repair by hand.
    ok(#configs >= 7, vim.inspect(configs))
    for _, rc in ipairs(configs) do
      ok(rc ~= fx.mbsyncrc, 'a run without the throttle: ' .. vim.inspect(configs))
    end
  end)

  it('with uidvalidity = "off" the error says what happened and how to repair it', function()
    local fx = t.fixture({ '--folders', 'INBOX=4,Archive=3' })
    use(fx.mbsyncrc, { uidvalidity = 'off' })
    eq(true, (t.sync_and_wait('full', { account = 'demo' })).success)
    move_keeping_name(fx, with_uid(fx, 'INBOX', 1), 'Archive')
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(false, result.success)
    eq('uidvalidity', result.kind)
    eq('Archive', info.damaged)
    eq(
      "local messages of demo:Archive clash with mbsync's numbering (a mail client moved them there and kept mbsync's"
        .. ' ,U= in their file names)',
      info.damaged_why
    )
    contains(result.error, "local messages of demo:Archive clash with mbsync's numbering")
    contains(result.error, ':HimalayaSync repair demo Archive')
  end)
end)
