--- `:HimalayaSync {subcommand} [args]`: one command, completion for
--- subcommands and their arguments.
local M = {}

local function notify(msg, level)
  require('himalaya.sync.native').notify(msg, level)
end

--- A bad argument for an error message (quoted, cut short when long).
local function shown(v)
  return require('himalaya.sync.native').shown(v)
end

local function err(msg)
  notify(msg, vim.log.levels.ERROR)
end

---@class himalaya.sync.Subcommand
---@field run fun(args: string[], opts: table)
---@field complete? fun(arglead: string, args: string[]): string[]
---@field desc string
---@field nargs? 0 takes no arguments (extra ones are an error)

---@type table<string, himalaya.sync.Subcommand>
M.subcommands = {}

local function ago(since)
  if not since then
    return ''
  end
  local s = os.time() - since
  if s < 120 then
    return ('%d s'):format(s)
  elseif s < 7200 then
    return ('%d min'):format(math.floor(s / 60))
  end
  return ('%d h'):format(math.floor(s / 3600))
end

--- A duration: "40 ms", "3.2 s", "2 min 5 s".
local function took(seconds)
  seconds = math.max(seconds, 0)
  -- Rounded before the unit is chosen: 0.9996 s is "1.0 s", not "1000 ms".
  local ms = math.floor(seconds * 1000 + 0.5)
  local tenths = math.floor(seconds * 10 + 0.5) / 10
  if ms < 1000 then
    return ('%d ms'):format(ms)
  elseif tenths < 60 then
    return ('%.1f s'):format(tenths)
  end
  local whole = math.floor(seconds + 0.5)
  return ('%d min %d s'):format(math.floor(whole / 60), whole % 60)
end

M.subcommands.locks = {
  desc = 'list named locks and their holders',
  nargs = 0,
  run = function()
    local lock = require('himalaya.sync.lock')
    local dir, derr = lock.lock_dir()
    if not dir then
      return err(derr)
    end
    local list, lerr = lock.list_locks()
    if lerr then
      return err(lerr)
    end
    ---@type [string, string?][]
    local chunks = { { ('Locks in %s\n'):format(dir), 'Title' } }
    if #list == 0 then
      chunks[#chunks + 1] = { '  (none)\n', 'Comment' }
    end
    for _, l in ipairs(list) do
      chunks[#chunks + 1] = { ('  %-24s '):format(l.name) }
      if l.held then
        chunks[#chunks + 1] = {
          ('held by pid %s (%s%s) for %s'):format(
            l.pid or '?',
            l.process or '?',
            l.mine and ', this Neovim' or '',
            ago(l.since)
          ),
          'WarningMsg',
        }
        if l.purpose and l.purpose ~= '' then
          chunks[#chunks + 1] = { ' - ' .. l.purpose }
        end
        chunks[#chunks + 1] = { '\n' }
      else
        chunks[#chunks + 1] = { 'free\n', 'Comment' }
      end
    end
    vim.api.nvim_echo(chunks, true, {})
  end,
}

M.subcommands.version = {
  desc = 'show plugin and library versions',
  nargs = 0,
  run = function()
    local native = require('himalaya.sync.native')
    local lib, lerr = native.get()
    if not lib then
      -- The reason says "himalaya-sync: " itself, which err() says too.
      return err(('himalaya-sync %s, no library: %s'):format(native.expected_version, native.bare(lerr)))
    end
    vim.api.nvim_echo({
      {
        ('himalaya-sync %s, library %s (build %s) from %s'):format(
          native.expected_version,
          lib.version,
          lib.build_id,
          native.source()
        ),
      },
    }, true, {})
  end,
}

--- Longest a `:HimalayaSync build` may take before it is stopped: a cold
--- release build takes a few minutes, so this is far beyond a normal one
--- and only ends a build that hangs (a lock on cargo's folders, a network
--- fetch that never answers).
M.BUILD_TIMEOUT_MS = 15 * 60 * 1000
--- How long cargo gets to exit after SIGTERM before SIGKILL.
M.BUILD_GRACE_MS = 3000
--- How long a sync asked for with a command waits, in seconds, while
--- another process (another Neovim, the command-line tool) syncs the same
--- account: the person asked for this sync, so it runs after that one
--- instead of failing with `locked`. It shows as waiting meanwhile and
--- `:HimalayaSync cancel` ends the wait.
M.LOCK_WAIT = 600

--- luv's kill, which types/luv.lua does not describe.
---@class himalaya.sync.UvKill
---@field kill fun(pid: integer, signal: string): 0?, string?, string?

---@class himalaya.sync.BuildState
---@field proc? vim.SystemObj the running `cargo build`
---@field started? integer when it started (vim.uv.now(), ms)
---@field stopped? 'timeout'|'exit' why it is being stopped

--- The running build, in the registry (native.state): a plugin reloader's
--- new copy of this module must see the build its old copy started.
---@return himalaya.sync.BuildState
local function build_state()
  return require('himalaya.sync.native').state('build', {})
end

--- Sends `signal` to the build's process group: cargo and the compilers and
--- build scripts it runs (it leads a group of its own, see `detach`).
---@param proc vim.SystemObj
---@param signal string
local function signal_build(proc, signal)
  (vim.uv --[[@as himalaya.sync.UvKill]]).kill(-proc.pid, signal)
end

--- Stops a running build at once (Neovim is quitting): SIGTERM, and
--- SIGKILL when it has not exited within BUILD_GRACE_MS.
function M._stop_build()
  local S = build_state()
  local proc = S.proc
  if not proc then
    return
  end
  S.stopped = 'exit'
  signal_build(proc, 'sigterm')
  -- The exit callback clears the state's `proc`.
  local gone = vim.wait(M.BUILD_GRACE_MS, function()
    return build_state().proc ~= proc
  end, 10)
  if not gone then
    signal_build(proc, 'sigkill')
  end
end

--- Reports the end of a build and loads the new library when it succeeded.
---@param res vim.SystemCompleted
---@param stopped? 'timeout'|'exit'
---@param secs number how long it ran
local function build_done(res, stopped, secs)
  local native = require('himalaya.sync.native')
  if stopped == 'exit' then
    return
  elseif stopped == 'timeout' then
    return err(
      ('cargo build did not finish within %g min and was stopped; run `cargo build --release` in %s to see why'):format(
        M.BUILD_TIMEOUT_MS / 60000,
        native.root
      )
    )
  elseif res.code ~= 0 then
    local lines = vim.split(vim.trim(res.stderr or ''), '\n')
    local tail = table.concat(vim.list_slice(lines, math.max(1, #lines - 4)), '\n')
    return err(('cargo build failed (exit %d):\n%s'):format(res.code, tail))
  end
  local ok, msg = native.reload(function()
    -- (`package.loaded` is typed as an empty table: say what a module may be.)
    local m = package.loaded['himalaya.sync.manager'] --[[@as table?]]
    return m ~= nil and m.is_busy ~= nil and m.is_busy()
  end)
  notify(('build finished in %.1f s; %s'):format(secs, msg or ''), ok and vim.log.levels.INFO or vim.log.levels.WARN)
end

M.subcommands.build = {
  desc = 'build the Rust library (cargo build --release) and load it',
  nargs = 0,
  run = function()
    local native = require('himalaya.sync.native')
    local S = build_state()
    if S.proc then
      -- Two cargo runs would only wait for each other's lock on target/.
      return err(
        ('a build is already running (for %d s); wait for its result'):format(
          (vim.uv.now() - (S.started or vim.uv.now())) / 1000
        )
      )
    end
    local loc = native.find()
    if loc and loc.kind ~= 'file' then
      return err(('the library is loaded from %s, not built here: %s'):format(loc.path, native.build_hint(loc.kind)))
    end
    if not vim.uv.fs_stat(native.root .. '/Cargo.toml') then
      return err(('no sources to build in %s (an install without the Rust crate)'):format(native.root))
    end
    if vim.fn.executable('cargo') ~= 1 then
      return err('cargo not found on PATH; install Rust (https://rustup.rs) and try again')
    end
    notify('building the library in ' .. native.root .. ' …')
    local started = vim.uv.now()
    -- Made after the spawn, which raises when it fails: no handle is left
    -- behind then. (The exit callback cannot run before it is set.)
    ---@type uv.uv_timer_t
    local timer
    -- detach: cargo leads a process group of its own, so that stopping it
    -- stops the compilers it runs too.
    local proc = vim.system(
      { 'cargo', 'build', '--release' },
      { cwd = native.root, text = true, detach = true },
      function(res)
        -- A luv callback: only plain Lua and handles here, the rest on the
        -- main loop.
        local stopped = S.stopped
        S.proc, S.stopped, S.started = nil, nil, nil
        timer:close()
        vim.schedule(function()
          build_done(res, stopped, (vim.uv.now() - started) / 1000)
        end)
      end
    )
    timer = assert(vim.uv.new_timer())
    S.proc, S.started = proc, started
    timer:start(M.BUILD_TIMEOUT_MS, 0, function()
      S.stopped = 'timeout'
      signal_build(proc, 'sigterm')
      timer:start(M.BUILD_GRACE_MS, 0, function()
        signal_build(proc, 'sigkill')
      end)
    end)
    vim.api.nvim_create_autocmd('VimLeavePre', {
      group = vim.api.nvim_create_augroup('himalaya_sync_build', { clear = true }),
      desc = 'himalaya-sync: stop a running :HimalayaSync build',
      callback = function()
        require('himalaya.sync.commands')._stop_build()
      end,
    })
  end,
}

--- The names a sync of `type` takes: the mbsyncrc's channels and groups
--- that take it, and himalaya's account names whose target does.
---@param type himalaya.sync.SyncType
---@return string[]
local function account_names(type)
  local names, targets = {}, {}
  for _, t in ipairs(require('himalaya.sync.manager').list_targets() or {}) do
    targets[t.name] = vim.tbl_contains(t.syncs, type)
    if targets[t.name] then
      names[#names + 1] = t.name
    end
  end
  -- The himalaya config is read once per completion, not once per name.
  for _, a in ipairs(require('himalaya.sync.himalaya').accounts() or {}) do
    if targets[a.name] == nil and a.target and targets[a.target] then
      names[#names + 1] = a.name
    end
  end
  return names
end

--- Completes the account of a sync of `type`, the only argument.
---@param type himalaya.sync.SyncType
local function complete_account(type)
  return function(_, args)
    return #args == 0 and account_names(type) or {}
  end
end

--- Completes `{account} {folder...}` of a folders sync or a repair: the
--- accounts that take it (one channel of several folders for a folders
--- sync, so no groups), then the account's configured folders, or else its
--- local folders (as the last sync left them).
---@param type 'folders'|'repair'
local function complete_account_folders(type)
  return function(_, args)
    if #args == 0 then
      return account_names(type)
    end
    local acct = require('himalaya.sync.config').get().accounts[args[1]]
    local folders = acct and acct.folders
    if not folders then
      local counts = require('himalaya.sync.manager').get_folder_counts(args[1])
      folders = vim.tbl_map(function(c)
        return c.folder
      end, counts or {})
    end
    -- Folders given already are not offered again.
    local given = {}
    for i = 2, #args do
      given[args[i]] = true
    end
    return vim.tbl_filter(function(f)
      return not given[f]
    end, folders)
  end
end

local function at_most(args, n, usage)
  if #args > n then
    err(('unexpected argument %s; usage: %s'):format(shown(args[n + 1]), usage))
    return false
  end
  return true
end

local function start(type, account, folders)
  local id, e =
    require('himalaya.sync.manager').start_sync(type, { account = account, folders = folders, wait = M.LOCK_WAIT })
  if not id then
    err(e)
  end
end

M.subcommands.full = {
  desc = 'sync every folder of an account',
  complete = complete_account('full'),
  run = function(args)
    if at_most(args, 1, ':HimalayaSync full [account]') then
      start('full', args[1])
    end
  end,
}

M.subcommands.inbox = {
  desc = "sync an account's inbox",
  complete = complete_account('inbox'),
  run = function(args)
    if at_most(args, 1, ':HimalayaSync inbox [account]') then
      start('inbox', args[1])
    end
  end,
}

M.subcommands.folders = {
  desc = 'sync some folders of an account: folders {account} {folder...}',
  complete = complete_account_folders('folders'),
  run = function(args)
    local account = table.remove(args, 1)
    if not account or #args == 0 then
      return err('usage: :HimalayaSync folders {account} {folder...}')
    end
    start('folders', account, args)
  end,
}

--- Echoes what a check found: new messages per folder.
local function report_check(result, info)
  if info.status == 'cancelled' then
    return notify(info.message, vim.log.levels.WARN)
  end
  if not result.success then
    return err(info.message or result.error or 'check failed')
  end
  ---@type [string, string?][]
  local chunks = {
    { ('%s: %d new (%.0f ms)\n'):format(info.account, result.new, result.duration * 1000), 'Title' },
  }
  for _, f in ipairs(result.folders or {}) do
    local label = f.imap_account and (f.imap_account .. ': ' .. f.folder) or f.folder
    -- Padded by display width: `%-24s` counts bytes, and "Entwürfe" has 9.
    local name = label .. (' '):rep(24 - vim.fn.strdisplaywidth(label))
    local line = ('  %s %5d new  %6d total  %5d unseen'):format(name, f.new, f.total, f.unseen)
    if f.error then
      line = ('  %s not checked: %s'):format(name, f.error.message)
    elseif f.uidvalidity_changed then
      line = line .. '  (UIDVALIDITY changed)'
    end
    chunks[#chunks + 1] = { line .. '\n', f.error and 'ErrorMsg' or (f.new > 0 and 'WarningMsg' or nil) }
  end
  vim.api.nvim_echo(chunks, true, {})
end

M.subcommands.check = {
  desc = 'ask the server how many messages are new per folder (STATUS, no sync)',
  complete = complete_account('full'),
  run = function(args)
    if not at_most(args, 1, ':HimalayaSync check [account]') then
      return
    end
    local id, e = require('himalaya.sync.manager').start_sync('check', {
      account = args[1],
      -- The report below is the answer; a notification would repeat it.
      quiet = true,
      on_complete = function(result, info)
        report_check(result, info)
      end,
    })
    if not id then
      err(e)
    end
  end,
}

M.subcommands.cancel = {
  desc = "cancel this Neovim's syncs and checks",
  nargs = 0,
  run = function()
    local n, why = require('himalaya.sync.manager').cancel_sync()
    notify(n == 0 and (why or 'no sync is running') or ('cancelling %d sync%s'):format(n, n == 1 and '' or 's'))
  end,
}

M.subcommands.cleanup = {
  desc = "cancel this Neovim's syncs and remove lock files nobody holds",
  nargs = 0,
  run = function()
    local n = require('himalaya.sync.manager').cancel_sync()
    local removed, lerr = require('himalaya.sync.lock').cleanup_stale_locks()
    if lerr then
      return err(lerr)
    end
    notify(
      ('%s; removed %d lock file%s nobody held'):format(
        n == 0 and 'no sync was running' or ('cancelling %d sync%s'):format(n, n == 1 and '' or 's'),
        removed,
        removed == 1 and '' or 's'
      )
    )
  end,
}

local function describe(info)
  -- Id 0 is a sync reported from outside the engine (update_progress).
  local whose = info.account or (info.id == 0 and '(reported from outside)') or '?'
  local status = info.status
  if status == 'running' or status == 'queued' or status == 'retrying' or status == 'repairing' then
    if require('himalaya.sync.manager')._cancelling(info.id) then
      status = 'cancelling'
    elseif status == 'running' and info.waiting_for then
      status = 'waiting'
    end
  end
  local parts = { ('#%s %s %s: %s'):format(info.id, info.type or '?', whose, status) }
  local p = info.progress
  if info.status == 'running' and p then
    if p.percent then
      parts[#parts + 1] = ('%d%%'):format(math.floor(p.percent))
    end
    if p.box then
      parts[#parts + 1] = 'in ' .. p.box
    end
    if p.near and p.near.new then
      parts[#parts + 1] = ('%d/%d new'):format(p.near.new.done, p.near.new.total)
    end
  end
  if info.message and (info.status ~= 'running' or info.waiting_for) then
    -- The holder's age was told when the wait began; by now it is wrong.
    local message = info.waiting_for and info.message:gsub(' %(taken [^()]* ago%)', '') or info.message
    parts[#parts + 1] = '- ' .. message
  end
  return table.concat(parts, ' ')
end

M.subcommands.status = {
  desc = 'show what is syncing and how the last syncs ended',
  nargs = 0,
  run = function()
    local info = require('himalaya.sync.manager').get_sync_info()
    ---@type [string, string?][]
    local chunks = { { 'himalaya-sync: ', 'Title' } }
    if #info.syncs == 0 and #info.elsewhere == 0 then
      chunks[#chunks + 1] = { 'idle, no sync yet\n' }
    else
      chunks[#chunks + 1] = { info.status .. '\n' }
      for _, s in ipairs(info.syncs) do
        local hl = ({ error = 'ErrorMsg', cancelled = 'WarningMsg', running = 'MoreMsg' })[s.status]
        chunks[#chunks + 1] = { '  ' .. describe(s) .. '\n', hl }
      end
      for _, e in ipairs(info.elsewhere) do
        local who = e.pid and ('%s %d'):format(e.process or 'pid', e.pid) or 'another process'
        local since = e.since and (' since ' .. os.date('%H:%M:%S', e.since)) or ''
        local what = e.purpose and (' (' .. e.purpose .. ')') or ''
        chunks[#chunks + 1] = { ('  %s: synced by %s%s%s\n'):format(e.account, who, since, what), 'MoreMsg' }
      end
    end
    vim.api.nvim_echo(chunks, true, {})
  end,
}

---@class himalaya.sync.Switchable
---@field start fun()
---@field stop fun()
---@field is_enabled fun(): boolean

--- A subcommand `{name} [on|off|toggle]` that switches `module` (loaded
--- when it runs), then calls `report(what)` to say how it stands.
---@param name string
---@param module string
---@param desc string
---@param report fun(what?: string)
---@return himalaya.sync.Subcommand
local function switch(name, module, desc, report)
  local usage = (':HimalayaSync %s [on|off|toggle]'):format(name)
  return {
    desc = desc .. ': ' .. name .. ' [on|off|toggle]',
    complete = function(_, args)
      return #args == 0 and { 'on', 'off', 'toggle' } or {}
    end,
    run = function(args)
      if not at_most(args, 1, usage) then
        return
      end
      ---@type himalaya.sync.Switchable
      local m = require(module)
      local what = args[1]
      if what == 'on' then
        m.start()
      elseif what == 'off' then
        m.stop()
      elseif what == 'toggle' then
        if m.is_enabled() then
          m.stop()
        else
          m.start()
        end
      elseif what ~= nil then
        return err(('unknown %s argument %s; expected on, off or toggle'):format(name, shown(what)))
      end
      report(what)
    end,
  }
end

M.subcommands.auto = switch('auto', 'himalaya.sync.auto', 'auto-sync on the configured interval', function()
  notify(require('himalaya.sync.auto').describe())
end)

M.subcommands.idle = switch(
  'idle',
  'himalaya.sync.idle',
  'push (IMAP IDLE): sync as soon as new mail arrives',
  function(what)
    local idle = require('himalaya.sync.idle')
    -- Turned on: try at once, so that the answer says who watches; `on`
    -- also restarts folders that stopped for good (their cause fixed).
    if what and idle.is_enabled() then
      local watching, warned = idle.try_now()
      if what == 'on' then
        idle.restart_stopped()
      end
      -- A warning has just said why it does not watch: the same reason
      -- again would only repeat it.
      if not watching and warned then
        return
      end
    end
    notify(idle.describe())
  end
)

local function when(t)
  return t and os.date('%Y-%m-%d %H:%M:%S', math.floor(t)) or 'never'
end

M.subcommands.info = {
  desc = 'sync history per account',
  nargs = 0,
  run = function()
    local history, herr = require('himalaya.sync.manager').history()
    if not history then
      return err(herr)
    end
    local names = vim.tbl_keys(history)
    table.sort(names)
    ---@type [string, string?][]
    local chunks = { { 'himalaya-sync history\n', 'Title' } }
    if #names == 0 then
      chunks[#chunks + 1] = { '  no sync recorded yet\n', 'Comment' }
    end
    for _, name in ipairs(names) do
      local h = history[name]
      chunks[#chunks + 1] = {
        ('  %s: last success %s, last sync %s (%s, %s), %d today\n'):format(
          name,
          when(h.last_success),
          when(h.last_sync),
          h.last_type or '?',
          took(h.last_duration or 0),
          h.syncs_today or 0
        ),
      }
      if h.last_error then
        chunks[#chunks + 1] = {
          ('    last error %s (%s): %s\n'):format(when(h.last_error.time), h.last_error.kind, h.last_error.message),
          'WarningMsg',
        }
      end
    end
    vim.api.nvim_echo(chunks, true, {})
  end,
}

M.subcommands.log = {
  desc = "open the engine's log file",
  nargs = 0,
  run = function()
    local path = require('himalaya.sync.manager').log_path()
    local ok, cfg = pcall(require('himalaya.sync.config').get)
    local off = ok and not cfg.log
    if vim.fn.filereadable(path) ~= 1 then
      return notify(off and 'the log is off (option log = false)' or ('no log yet at ' .. path))
    end
    vim.cmd('split ' .. vim.fn.fnameescape(path))
    vim.bo.readonly = true
    if off then
      notify('the log is off (option log = false): this is what it held before')
    end
  end,
}

M.subcommands.repair = {
  desc = 'repair a folder mbsync refuses (UIDVALIDITY changed, clashing UIDs), without losing mail: repair {account} {folder}',
  complete = function(arglead, args)
    return #args <= 1 and complete_account_folders('repair')(arglead, args) or {}
  end,
  run = function(args)
    if #args ~= 2 then
      return err('usage: :HimalayaSync repair {account} {folder}')
    end
    start('repair', args[1], { args[2] })
  end,
}

local OAUTH_ACTIONS = { 'status', 'refresh', 'authorize', 'cancel', 'clear' }

M.subcommands.oauth = {
  desc = 'OAuth2 tokens: oauth {status|refresh|authorize|cancel|clear} [account] (authorize --device for a code)',
  complete = function(_, args)
    if #args == 0 then
      return OAUTH_ACTIONS
    end
    if #args == 1 then
      return require('himalaya.sync.oauth').accounts()
    end
    return #args == 2 and args[1] == 'authorize' and { '--device' } or {}
  end,
  run = function(args)
    local action, account = args[1], args[2]
    local usage = ':HimalayaSync oauth {' .. table.concat(OAUTH_ACTIONS, '|') .. '} [account]'
    if action == 'cancel' then
      if not at_most(args, 2, ':HimalayaSync oauth cancel [account]') then
        return
      end
      local n, finishing, cerr = require('himalaya.sync.oauth')._cancel_authorize(account)
      if cerr then
        return err(cerr)
      end
      local of = account and (' of ' .. account) or ''
      if finishing > 0 then
        -- Its answer is in: it is stored, whatever the user asked here.
        return notify(
          ('%sthe authorization%s was answered already and finishes'):format(
            n > 0 and ('cancelled %d; '):format(n) or '',
            of
          )
        )
      end
      return notify(
        n == 0 and ('no authorization%s is waiting'):format(of)
          or ('cancelled %d authorization%s'):format(n, n == 1 and '' or 's')
      )
    end
    if not vim.tbl_contains(OAUTH_ACTIONS, action) then
      return err('usage: ' .. usage .. ' (authorize: [--device]; cancel: account optional)')
    end
    local device = false
    if action == 'authorize' then
      for i = #args, 2, -1 do
        if args[i] == '--device' then
          device = true
          table.remove(args, i)
        elseif vim.startswith(args[i], '-') then
          return err(
            ('unknown option %s; usage: :HimalayaSync oauth authorize [account] [--device]'):format(shown(args[i]))
          )
        end
      end
      account = args[2]
    end
    if not at_most(args, 2, usage) then
      return
    end
    if not account then
      -- The only OAuth account goes without saying; status covers them all.
      local names = require('himalaya.sync.oauth').accounts()
      if #names == 0 then
        return err('no account has accounts.NAME.oauth configured')
      end
      if action == 'status' and #names > 1 then
        for _, name in ipairs(names) do
          M.subcommands.oauth.run({ 'status', name }, {})
        end
        return
      end
      if #names > 1 then
        return err(('which account? one of: %s; usage: %s'):format(table.concat(names, ', '), usage))
      end
      account = names[1]
    end
    ---@cast account string
    local oauth = require('himalaya.sync.oauth')
    -- Most engine messages name the account already: it is not said twice.
    local function about(text)
      return text:find(account, 1, true) and text or ('%s: %s'):format(account, text)
    end
    local function report(what)
      return function(ok, e, kind)
        if ok then
          notify(('%s: %s'):format(account, what))
        elseif kind == 'cancelled' then
          notify(about(e), vim.log.levels.WARN)
        else
          err(about(e))
        end
      end
    end
    if action == 'status' then
      oauth.status(account, function(st, e)
        if not st then
          return err(e)
        end
        local lines = {
          ('%s (%s, store: %s)'):format(account, st.provider or 'no provider', st.store),
          st.has_token and ('  token: %s%s'):format(
            require('himalaya.sync.oauth')._expiry(st.expires_in),
            st.has_refresh_token and ', refresh token stored' or ', no refresh token'
          ) or '  no token stored: :HimalayaSync oauth authorize ' .. account,
        }
        if st.last_refresh then
          lines[#lines + 1] = ('  last refresh %s ago'):format(ago(st.last_refresh))
        end
        if st.last_error then
          lines[#lines + 1] = ('  last error (%s): %s'):format(st.last_error.kind, st.last_error.message)
        end
        if st.store_error then
          lines[#lines + 1] = '  store: ' .. st.store_error
        end
        notify(table.concat(lines, '\n'))
      end)
    elseif action == 'refresh' then
      oauth.refresh_token(account, report('token refreshed'))
    elseif action == 'clear' then
      oauth.clear_token(account, report('stored tokens removed'))
    else
      oauth.authorize(account, { device = device }, report('authorized'))
    end
  end,
}

--- Sorted subcommand names.
---@return string[]
function M.names()
  local names = vim.tbl_keys(M.subcommands)
  table.sort(names)
  return names
end

--- Entry point of `:HimalayaSync`.
---@param opts {fargs: string[]}
function M.run(opts)
  local args = vim.deepcopy(opts.fargs)
  -- The bare command: what a user typing it most likely wants to know.
  local name = table.remove(args, 1) or 'status'
  local sub = M.subcommands[name]
  if not sub then
    return err(('unknown subcommand %s; expected one of: %s'):format(shown(name), table.concat(M.names(), ', ')))
  end
  if sub.nargs == 0 and not at_most(args, 0, ':HimalayaSync ' .. name) then
    return
  end
  local ok, e = pcall(sub.run, args, opts)
  if not ok then
    err(tostring(e))
  end
end

--- Splits a command line into words as Neovim splits `:HimalayaSync`'s
--- arguments (`fargs`): at blanks, where a backslash before a blank or a
--- backslash makes that character part of the word (`Sent\ Items` is one
--- argument), and before `|` or `"` too (the command has -bar: unescaped,
--- they would end it).
---@param line string
---@return string[]
local function split_args(line)
  local words, word = {}, nil
  local i = 1
  while i <= #line do
    local c = line:sub(i, i)
    if c == '\\' and line:sub(i + 1, i + 1):match('[ \t\\|"]') then
      word = (word or '') .. line:sub(i + 1, i + 1)
      i = i + 1
    elseif c == ' ' or c == '\t' then
      words[#words + 1] = word
      word = nil
    else
      word = (word or '') .. c
    end
    i = i + 1
  end
  words[#words + 1] = word
  return words
end

--- `name` as an argument that split_args reads back as `name`: Neovim puts
--- a completion into the command line as it is, so a space would split it,
--- and `|` or `"` would end the command.
---@param name string
---@return string
local function escape_arg(name)
  return (name:gsub('[ \t\\|"]', '\\%0'))
end

--- Completion for `:HimalayaSync`. Names come back escaped (`Sent\ Items`).
---@param arglead string
---@param cmdline string
---@return string[]
function M.complete(arglead, cmdline)
  -- Only the last command of `cmd | cmd`: Neovim gives the whole line.
  local last, at = 1, cmdline:find('|', 1, true)
  while at do
    if cmdline:sub(at - 1, at - 1) ~= '\\' then
      last = at + 1
    end
    at = cmdline:find('|', at + 1, true)
  end
  local words = split_args(cmdline:sub(last))
  -- Drop what comes before the arguments: modifiers such as :silent, and
  -- the command's name, maybe abbreviated.
  for i, w in ipairs(words) do
    local name = w:gsub('^:+', ''):gsub('!$', '')
    if #name >= 2 and vim.startswith('HimalayaSync', name) then
      words = vim.list_slice(words, i + 1)
      break
    end
  end
  -- The word typed so far as the command will read it: the last word when
  -- one is being typed.
  local typed = arglead ~= '' and table.remove(words) or ''
  ---@param list string[]
  ---@return string[]
  local function filter(list)
    local out = {}
    for _, s in ipairs(list) do
      local escaped = escape_arg(s)
      -- What is typed may be escaped or not: `Sent\` starts only the
      -- escaped `Sent\ Items`, `a\b` (read back as itself) only the name.
      if vim.startswith(escaped, arglead) or vim.startswith(s, typed) then
        out[#out + 1] = escaped
      end
    end
    return out
  end
  local name = words[1]
  if not name then
    return filter(M.names())
  end
  local sub = M.subcommands[name]
  if sub and sub.complete then
    local ok, list = pcall(sub.complete, arglead, vim.list_slice(words, 2))
    return ok and filter(list or {}) or {}
  end
  return {}
end

return M
