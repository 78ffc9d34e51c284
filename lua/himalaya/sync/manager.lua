--- The sync manager (`require('himalaya.sync.manager')`): one coordinator for
--- every sync. Syncs run in the Rust engine; this module mirrors their state
--- from engine events, runs the caller's callbacks, and notifies the user.
---
--- `get_sync_info()` never loads the library and never blocks, so it is safe
--- in a statusline.
local native = require('himalaya.sync.native')
local config = require('himalaya.sync.config')

local M = {}

---@alias himalaya.sync.SyncType 'full'|'inbox'|'folders'|'repair'|'check'
---@alias himalaya.sync.Status 'idle'|'queued'|'running'|'retrying'|'repairing'|'completed'|'error'|'cancelled'

---@class himalaya.sync.Counter
---@field done integer
---@field total integer

---@class himalaya.sync.Side message counters of one side (far: server, near: local)
---@field new himalaya.sync.Counter messages copied to this side (`+`)
---@field flags himalaya.sync.Counter flag changes applied to it (`*`)
---@field trash himalaya.sync.Counter messages moved to its trash (`#`)
---@field expunge himalaya.sync.Counter messages expunged from it (`-`, mbsync 1.5+; else 0)

---@class himalaya.sync.Progress
---@field channels himalaya.sync.Counter
---@field boxes himalaya.sync.Counter
---@field far himalaya.sync.Side
---@field near himalaya.sync.Side
---@field truncated boolean part of the frame was cut off; unread counters are 0
---@field percent? number 0-100, only moves forward
---@field box? string the folder mbsync is working on

---@class himalaya.sync.Result
---@field success boolean
---@field error? string one line for the user
---@field kind? string auth|network|timeout|locked|uidvalidity|config|cancelled|invalid|io|unknown
---@field duration number seconds from the request to the end, retries included
---@field waited number seconds of duration spent waiting for the account's lock (another process's sync)
---@field attempts integer attempts made (1 without retries)
---@field pulled integer messages copied to the local side
---@field pushed integer messages copied to the server
---@field flags_changed integer
---@field trashed integer

--- Why the server refused one folder of a check.
---@class himalaya.sync.FolderError
---@field kind string config (missing on the server, not selectable, not allowed) | network (busy for now) | unknown
---@field message string one line naming the folder and the server's reason

---@class himalaya.sync.FolderCheck
---@field folder string the server's name (decoded): Work/Café
---@field new integer messages the next sync would pull
---@field total integer
---@field unseen integer
---@field uidvalidity_changed boolean the next sync fails until the folder is repaired
---@field local_changes boolean the local copy changed since mbsync last synced it (a sync takes that to the server)
---@field error? himalaya.sync.FolderError set when the server refused the folder; new, total and unseen are then 0
---@field imap_account? string the mbsyncrc's IMAPAccount the folder is on, when the account's channels log in to several (a Group of accounts: each has an INBOX)

--- The result of a check (sync type `check`), in place of a Result.
---@class himalaya.sync.CheckResult
---@field success boolean
---@field error? string one line for the user
---@field kind? string auth|network|timeout|config
---@field duration number seconds from the request to the end
---@field attempts integer always 1
---@field new integer new messages in all folders
---@field folders himalaya.sync.FolderCheck[] per folder: INBOX first, then as the server lists them
---@field changed string[] folders a sync has work in, or that the check could not look into
---@field changed_boxes string[] the same as mbsync names them (empty: several channels)

---@class himalaya.sync.SyncInfo
---@field id? integer
---@field type? himalaya.sync.SyncType|string any string for an outside sync (id 0, see update_progress)
---@field status himalaya.sync.Status
---@field progress? himalaya.sync.Progress
---@field account? string
---@field channel? string mbsync targets
---@field channels? string[] the mbsync channels it syncs (a group's members), each locked while mbsync runs
---@field start_time? number unix seconds
---@field end_time? number unix seconds
---@field message? string
---@field error? {kind: string, message: string, line: string}
---@field result? himalaya.sync.Result|himalaya.sync.CheckResult
---@field folders? string[] the folders of a folders or repair sync
---@field attempt? integer attempt in progress (1 for the first run)
---@field next_retry? number unix seconds of the next attempt while retrying
---@field requests? integer requests this sync answers (more than 1 when coalesced)
---@field repair? {channel: string, mailbox: string, backup: string, fetched: integer, restored: integer, uploaded: integer, backed_up: integer} what a UIDVALIDITY repair did
---@field damaged? string the folder whose UIDVALIDITY change ended the sync
---@field damaged_channel? string its mbsync channel (what a repair is for)
---@field damaged_why? string why it needs a repair, in a phrase ("the server renumbered demo:Work (UIDVALIDITY changed)")
---@field waiting_for? string while a running sync waits for another process that syncs the account: who holds its lock

--- A sync another process runs (another Neovim, the command-line tool):
--- the holder of the account's sync lock.
---@class himalaya.sync.Elsewhere
---@field account string the mbsync channel it syncs
---@field pid? integer
---@field process? string its process name (`nvim`, `himalaya-sync`)
---@field since? integer unix seconds it has held the lock since
---@field purpose? string what it said it does (`full sync of demo`)

--- What `get_sync_info()` returns: the current (or last ended) sync's info, or
--- only `status = 'idle'` before any sync, and the lists.
---@class himalaya.sync.SyncState : himalaya.sync.SyncInfo
---@field syncs himalaya.sync.SyncInfo[] every sync of this Neovim, oldest first
---@field queue himalaya.sync.SyncInfo[] syncs waiting (queued or retrying)
---@field elsewhere himalaya.sync.Elsewhere[] syncs other processes run, by account

---@class himalaya.sync.StartOptions
---@field account? string channel or group name (default: the only one in mbsyncrc)
---@field folders? string[] for type 'folders'
---@field wait? number seconds to wait when another process syncs the account (default 0)
---@field on_progress? fun(progress: himalaya.sync.Progress, info: himalaya.sync.SyncInfo)
---@field on_complete? fun(result: himalaya.sync.Result|himalaya.sync.CheckResult, info: himalaya.sync.SyncInfo) a CheckResult for a check
---@field auto? boolean started by the auto-sync timer (quiet unless notify.auto)
---@field quiet? boolean the caller reports the result: no notifications

-- The syncs and who waits for them live in the Lua registry: a plugin
-- reloader's new copy of this module answers the requests its old copy
-- took, and keeps the on_update listeners.
---@class himalaya.sync.ManagerState
---@field syncs table<integer, himalaya.sync.SyncInfo>
---@field order integer[] sync ids, oldest first
---@field callbacks table<integer, himalaya.sync.StartOptions[]> requests answered by each sync
---@field wanted table<integer, boolean> syncs asked for by a person (not only by the timer)
---@field quiet table<integer, boolean> syncs whose every request reports the result itself
---@field listeners fun(info: himalaya.sync.SyncInfo)[] added by M.on_update
---@field frozen table<integer, himalaya.sync.SyncInfo> copies of finished syncs (see snapshot)
---@field ended_unseen table<integer, true?> syncs that ended since the last HimalayaSyncUpdate
---@field progress_msg table<integer, integer> sync id -> native progress message id
---@field progress_cancel table<integer, true?> syncs whose progress message someone set to cancel
---@field cancelling table<integer, true?> running syncs that cancel_sync asked to stop
---@field repair_asked table<string, 'open'|'declined'> repair prompts by channel and folder (see M._offer_repair)
---@field status_text string the status line text (see M.statusline)
---@field elsewhere himalaya.sync.Elsewhere[] syncs other processes run (event sync_elsewhere)
---@type himalaya.sync.ManagerState
local S = native.state('manager', {
  syncs = {},
  order = {},
  callbacks = {},
  wanted = {},
  quiet = {},
  listeners = {},
  frozen = {},
  ended_unseen = {},
  progress_msg = {},
  progress_cancel = {},
  cancelling = {},
  repair_asked = {},
  status_text = '',
  elsewhere = {},
})
local syncs, order, callbacks, wanted, quiet = S.syncs, S.order, S.callbacks, S.wanted, S.quiet
local listeners, frozen, progress_msg, progress_cancel = S.listeners, S.frozen, S.progress_msg, S.progress_cancel
-- Each copy of this module subscribes its own handler (native.own drops
-- the old copy's).
local subscribed = false
--- What the engine was last configured from (see ready()).
---@type {lib: himalaya.sync.NativeLib, cfg: himalaya.sync.Config}?
local configured

local KEEP = 20
---@type table<string, true?>
local SYNC_TYPES = { full = true, inbox = true, folders = true, repair = true, check = true }

---@type table<string, true?>
local FINAL = { completed = true, error = true, cancelled = true }

local function remember(info)
  local known = syncs[info.id]
  if known and FINAL[known.status] and info.id ~= 0 then
    -- Nothing follows a sync's end; a late event must not revive it.
    return false
  end
  if not known then
    order[#order + 1] = info.id
    if #order > KEEP then
      local old = table.remove(order, 1)
      syncs[old] = nil
      frozen[old] = nil
      S.cancelling[old] = nil
    end
  end
  syncs[info.id] = info
  if FINAL[info.status] then
    S.ended_unseen[info.id] = true
    S.cancelling[info.id] = nil
  end
  return true
end

--- A copy of `info` for callers. A finished sync never changes again, so
--- its copy is made once and shared: every update would otherwise copy the
--- whole history again (20 syncs with their results and folder counts), on
--- the editor's thread, several times a second while a sync runs.
---@param info himalaya.sync.SyncInfo
---@return himalaya.sync.SyncInfo
local function snapshot(info)
  if not FINAL[info.status] or info.id == 0 then
    return vim.deepcopy(info)
  end
  local copy = frozen[info.id]
  if not copy then
    copy = vim.deepcopy(info)
    frozen[info.id] = copy
  end
  return copy
end

--- Notifies unless configured quiet; `what` is start, success or error.
local function notify(what, msg, level, id)
  local ok, cfg = pcall(config.get)
  local n = ok and cfg.notify or config.defaults.notify
  if not n.enabled or not n[what] then
    return
  end
  if id and (quiet[id] or (not wanted[id] and not n.auto)) then
    return
  end
  native.notify(msg, level)
end

--- `msg` about sync `info` as a notification names it: `full sync of
--- demo failed: authentication failed: ...`, so that a failure of one of
--- several accounts says which (unless the message names it already).
---@param info table
---@param msg any
---@param failed boolean?
---@return any
local function named(info, msg, failed)
  local what = info.type == 'check' and 'check' or (tostring(info.type or 'sync') .. ' sync')
  local head = ('%s of %s'):format(what, tostring(info.account))
  if type(msg) ~= 'string' or info.account == nil or vim.startswith(msg, head) then
    return msg
  end
  return ('%s%s: %s'):format(head, failed and ' failed' or '', msg)
end

local function call(fn, ...)
  if fn then
    native.call_back(fn, ...)
  end
end

---@type table<string, string?> event name -> User autocommand
local USER_EVENT = {
  sync_started = 'HimalayaSyncStarted',
  sync_progress = 'HimalayaSyncProgress',
}

--- The sync that ended last, not the last one asked for: a check asked
--- for during a long sync ends first.
---@return himalaya.sync.SyncInfo?
local function last_ended()
  local last
  for _, id in ipairs(order) do
    local info = syncs[id]
    if info.end_time and (not last or info.end_time >= last.end_time) then
      last = info
    end
  end
  return last
end

--- Short text for status lines, computed when state changes (not on redraw).
local function compute_status()
  -- Per account, in the order accounts first appear: what runs (or waits
  -- to retry, or is repaired), then how many of its syncs wait in the
  -- queue: "sync demo 18% +1 queued", "sync work 2 queued".
  local names, active, queued, channels = {}, {}, {}, {}
  for _, id in ipairs(order) do
    local info = syncs[id]
    -- A sync reported from outside the engine (update_progress) may name no account.
    local name = info.account or info.type
    local st = info.status
    if st == 'queued' or st == 'running' or st == 'retrying' or st == 'repairing' then
      for _, c in ipairs(info.channels or {}) do
        channels[c] = true
      end
      if not active[name] then
        names[#names + 1] = name
        active[name], queued[name] = {}, 0
      end
      if st == 'queued' then
        queued[name] = queued[name] + 1
      elseif st == 'running' and info.type == 'check' then
        -- A check only asks the server: not shown as a sync of the account.
        table.insert(active[name], name .. ' checking')
      elseif st == 'running' then
        local pct = info.progress and info.progress.percent
        table.insert(
          active[name],
          info.waiting_for and (name .. ' waiting') or pct and ('%s %d%%'):format(name, math.floor(pct)) or name
        )
      elseif st == 'retrying' then
        -- A time, not a countdown: the text only changes with sync state.
        table.insert(
          active[name],
          ('%s retry at %s'):format(name, os.date('%H:%M:%S', math.floor(info.next_retry or 0)))
        )
      else
        table.insert(active[name], name .. ' repairing')
      end
    end
  end
  local parts = {}
  for _, name in ipairs(names) do
    local mine, n = active[name], queued[name]
    if #mine == 0 then
      parts[#parts + 1] = n == 1 and (name .. ' queued') or ('%s %d queued'):format(name, n)
    else
      if n > 0 then
        mine[#mine] = ('%s +%d queued'):format(mine[#mine], n)
      end
      vim.list_extend(parts, mine)
    end
  end
  -- Then syncs of other processes. Locks are per channel: a sync of a
  -- group holds several, each with the note "full sync of gmail", and
  -- shows once, by that name. Left out when this Neovim shows a sync of
  -- that channel or name already (its sync, maybe of a group or part of
  -- one, waits for the other one).
  local shown = {}
  for _, e in ipairs(S.elsewhere) do
    local name = e.pid and e.purpose and e.purpose:match('^%l+ sync of (%S+)$') or e.account
    if not (active[e.account] or channels[e.account] or active[name]) then
      local who = e.pid and ('%s %d'):format(e.process or 'pid', e.pid) or 'elsewhere'
      local part = ('%s (%s)'):format(name, who)
      if not shown[part] then
        shown[part] = true
        parts[#parts + 1] = part
      end
    end
  end
  if #parts > 0 then
    return 'sync ' .. table.concat(parts, ', ')
  end
  local last = last_ended()
  if last and last.status == 'error' and last.error then
    return ('sync %s: %s error'):format(last.account or last.type, last.error.kind)
  end
  return ''
end

-- Neovim 0.12+ shows progress natively (`nvim_echo` with kind "progress").
-- (A 0.12 development build from before the Progress event lacks them.)
local native_progress = vim.fn.has('nvim-0.12') == 1 and vim.fn.exists('##Progress') == 1
--- The `source` of those messages, which `Progress` autocommands match.
local PROGRESS_SOURCE = 'himalaya-sync'

--- Updates the native progress message of a sync (0.12+). A sync gets one
--- when notifications are on for it; once shown, it is kept up to date and
--- always ended, whatever the settings say by then.
---@param info himalaya.sync.SyncInfo
---@param status 'running'|'success'|'failed'|'cancel'
local function echo_progress(info, status)
  if not native_progress then
    return
  end
  local msg_id = progress_msg[info.id]
  local final = status ~= 'running'
  if final then
    -- Forgotten before the last update: its `cancel` status (a cancelled
    -- sync) then reaches the Progress handler below as a message of nobody.
    progress_msg[info.id] = nil
    progress_cancel[info.id] = nil
  elseif progress_cancel[info.id] then
    -- Someone set it to cancel: it says so until the sync has ended.
    return
  end
  if not msg_id then
    local ok, cfg = pcall(config.get)
    if not ok or not cfg.notify.enabled or quiet[info.id] or (not wanted[info.id] and not cfg.notify.auto) then
      return
    end
  end
  local pct = info.progress and info.progress.percent
  local done, id = pcall(vim.api.nvim_echo, { { info.message or '' } }, false, {
    kind = 'progress',
    id = msg_id,
    source = PROGRESS_SOURCE,
    title = 'himalaya-sync',
    status = status,
    percent = pct and math.floor(pct) or nil,
  })
  -- 0.12's nvim_echo returns the message id, or -1 when nothing was shown;
  -- the 0.11 types checked against (make lint) say it returns nothing.
  local shown = done and tonumber(id) or -1
  if not final and shown > 0 then
    progress_msg[info.id] = shown
  end
end

-- A progress message set to `cancel` by someone else (a progress UI, a
-- mapping; Neovim requires them to name its source) asks its owner to
-- cancel the work: the sync is cancelled, and its message then ends as any
-- cancelled sync's does.
if native_progress then
  vim.api.nvim_create_autocmd('Progress', {
    group = vim.api.nvim_create_augroup('himalaya_sync_progress', { clear = true }),
    pattern = PROGRESS_SOURCE,
    desc = 'himalaya-sync: cancel the sync whose progress message is set to cancel',
    ---@param ev {data: {id: integer|string, status: string}?}
    callback = function(ev)
      local data = ev.data
      if type(data) ~= 'table' or data.status ~= 'cancel' then
        return
      end
      for sync_id, msg_id in pairs(progress_msg) do
        if msg_id == data.id then
          if not progress_cancel[sync_id] then
            progress_cancel[sync_id] = true
            M.cancel_sync(sync_id)
          end
          return
        end
      end
    end,
  })
end

--- Fires `User {pattern}` unless no `User` autocommand exists at all:
--- handing `data` to an autocommand copies it even when nobody listens.
--- (Asking about this one pattern would miss listeners of a wildcard
--- pattern such as `HimalayaSync*`: exists() compares patterns literally.)
local function listened()
  return vim.fn.exists('#User') == 1
end

local function fire(pattern, data)
  if listened() then
    vim.api.nvim_exec_autocmds('User', { pattern = pattern, modeline = false, data = data })
  end
end

--- A sync of this Neovim holds the locks of its channels now (its wait is
--- over, or mbsync reports progress): whoever held them before is gone.
--- The engine's next look says so too, but up to a quarter second later,
--- and a short sync can end before it: "sync demo (nvim 4242)" would then
--- stand after this Neovim's own sync of demo had ended.
---@param info himalaya.sync.SyncInfo
local function forget_elsewhere(info)
  if #S.elsewhere == 0 then
    return
  end
  local mine = {}
  for _, channel in ipairs(info.channels or {}) do
    mine[channel] = true
  end
  local left = vim.tbl_filter(function(e)
    return not mine[e.account]
  end, S.elsewhere)
  if #left < #S.elsewhere then
    S.elsewhere = left
  end
end

--- Kinds of failure the next background sync will meet again: the user
--- has to act (also what auto-sync's :checkhealth warns of).
---@type table<string, true?>
local LASTING = { auth = true, config = true }
M._LASTING = LASTING

--- Background syncs (auto-sync's timer, IDLE's pushes) are quiet unless
--- `notify.auto`, so one that fails in a way the next will too (a wrong
--- password, a broken mbsyncrc) would go unseen without a status line: it
--- is told once, as a problem of the job that asked for it.
---@param info himalaya.sync.SyncInfo a sync that ended
---@param job string 'auto-sync' or 'IDLE'
local function tell_lasting(info, job)
  local r = info.result
  if info.type == 'check' or not r or r.success or not LASTING[r.kind] then
    return
  end
  local ok, cfg = pcall(config.get)
  if ok and cfg.notify.enabled and cfg.notify.auto and cfg.notify.error then
    return -- the failure was notified as it ended
  end
  native.problem(job, ('%s sync of %s failed: %s'):format(info.type, info.account, r.error))
end

local function on_event(ev)
  if ev.name == 'warning' then
    native.notify(ev.data.message, vim.log.levels.WARN)
    return
  end
  if ev.name == 'sync_elsewhere' then
    -- The engine's first word may be what is known already (nothing).
    local now = ev.data.syncs or {}
    if not vim.deep_equal(now, S.elsewhere) then
      S.elsewhere = now
      M.notify_ui_update()
    end
    return
  end
  local info = ev.data
  if not remember(info) then
    return
  end
  local requests = callbacks[info.id] or {}
  if ev.name == 'sync_started' then
    local what = info.type == 'check' and 'check' or (info.type .. ' sync')
    notify('start', ('%s of %s started'):format(what, info.account), vim.log.levels.INFO, info.id)
  elseif ev.name == 'sync_progress' and info.progress then
    -- Callbacks get copies: what they change must not change the state
    -- the status line, is_busy() and the next events read.
    for _, r in ipairs(requests) do
      if r.on_progress then
        local copy = vim.deepcopy(info)
        -- An on_progress that raised is not called again for this sync:
        -- it would raise (and notify) at every progress event.
        if not native.call_back(r.on_progress, copy.progress, copy) then
          r.on_progress = nil
        end
      end
    end
    echo_progress(info, 'running')
    forget_elsewhere(info)
  elseif ev.name == 'sync_waiting' then
    -- What it waits for, or that it runs again.
    echo_progress(info, 'running')
    if not info.waiting_for then
      forget_elsewhere(info)
    end
  elseif ev.name == 'sync_auth' then
    M._refresh(info)
  elseif ev.name == 'sync_retry' or ev.name == 'sync_repair' then
    notify('error', named(info, info.message), vim.log.levels.WARN, info.id)
  elseif ev.name == 'sync_done' then
    callbacks[info.id] = nil
    for _, r in ipairs(requests) do
      if r.on_complete then
        local copy = vim.deepcopy(info)
        call(r.on_complete, copy.result, copy)
      end
    end
    echo_progress(info, ({ completed = 'success', cancelled = 'cancel' })[info.status] or 'failed')
    if info.status == 'completed' then
      notify('success', info.message, vim.log.levels.INFO, info.id)
    else
      local cancelled = info.status == 'cancelled'
      notify(
        'error',
        named(info, info.message, not cancelled),
        cancelled and vim.log.levels.WARN or vim.log.levels.ERROR,
        info.id
      )
    end
    local by_hand = wanted[info.id]
    if not by_hand and not quiet[info.id] then
      -- false: asked for by auto-sync's timer; nil: by nobody here, so by
      -- an IDLE watcher of this Neovim's engine.
      tell_lasting(info, by_hand == false and 'auto-sync' or 'IDLE')
    end
    wanted[info.id] = nil
    quiet[info.id] = nil
    if info.damaged and info.error and info.error.kind == 'uidvalidity' then
      M._offer_repair(info, by_hand)
    end
  end
  local pattern = USER_EVENT[ev.name]
  if ev.name == 'sync_done' then
    pattern = info.status == 'completed' and 'HimalayaSyncCompleted' or 'HimalayaSyncFailed'
  end
  -- The status line and on_update listeners first: they must not depend
  -- on every User autocommand working.
  M.notify_ui_update()
  if pattern then
    fire(pattern, info)
  end
  -- A sync's end is told at once, not one more loop turn later.
  if FINAL[info.status] then
    M._flush_ui_update()
  end
end

--- The library, subscribed and configured for the current settings.
---@return himalaya.sync.NativeLib? lib
---@return string? err
---@return string? kind `invalid` for a call from a fast event; nil for a configuration problem
local function ready()
  -- Loading and configuring read options and call Vimscript functions,
  -- which a libuv callback may not: refused there every time, not only
  -- until the first call from the main loop has done that work.
  -- (Neovim's types leave out what in_fast_event returns.)
  if
    vim.in_fast_event() --[[@as boolean]]
  then
    return nil,
      'himalaya-sync cannot be called in a fast event (a libuv callback): call it from vim.schedule()',
      'invalid'
  end
  local lib, err = native.get()
  if not lib then
    return nil, err
  end
  if not subscribed then
    subscribed = true
    native.own('himalaya.sync.manager', {
      'sync_queued',
      'sync_started',
      'sync_progress',
      'sync_waiting',
      'sync_retry',
      'sync_repair',
      'sync_auth',
      'sync_done',
      'sync_elsewhere',
      'warning',
    }, on_event)
  end
  local ok, cfg = pcall(config.get)
  if not ok then
    return nil, cfg
  end
  -- The configured lock folder must be in place before the engine takes
  -- any lock (it is shared with other Neovims).
  local lock = require('himalaya.sync.lock')
  local locked, lerr = lock._ready()
  if not locked then
    return nil, lerr
  end
  lock._check_moved(lib, cfg)
  -- The engine's settings come from the configuration (the same table
  -- until it changes): unchanged, the engine needs nothing. This runs at
  -- every sync start, before mbsync can start, so nothing more is looked
  -- at then. (A rebuilt library loaded by :HimalayaSync build starts
  -- unconfigured.)
  if configured and configured.lib == lib and configured.cfg == cfg then
    return lib
  end
  -- Paths get `~` and `$VAR` expanded, and nothing else: expand() would
  -- also run a command written in backticks.
  local derived = {
    relay_cmd = native.tool_path(),
    state_dir = vim.fs.normalize(cfg.state_dir or (vim.fn.stdpath('state') .. '/himalaya-sync')),
    config = cfg.mbsync.config and vim.fs.normalize(cfg.mbsync.config),
  }
  -- The engine gets data only: which accounts have a refresh function.
  local accounts, refreshable, oauth = {}, {}, {}
  for name, a in pairs(cfg.accounts) do
    accounts[name] = { full = a.full, inbox = a.inbox, throttle = a.throttle }
    if a.refresh or a.oauth then
      refreshable[#refreshable + 1] = name
    end
    if a.oauth then
      local o = vim.tbl_extend('force', a.oauth, { name = name })
      -- A token folder gets ~ and $VAR expanded, as state_dir does.
      if o.store and o.store.dir then
        o.store = vim.tbl_extend('force', o.store, { dir = vim.fs.normalize(o.store.dir) })
      end
      oauth[#oauth + 1] = o
    end
  end
  table.sort(refreshable)
  table.sort(oauth, function(x, y)
    return x.name < y.name
  end)
  ---@type table<string, any> the engine's settings (LuaSettings in src/lua/manager.rs)
  local settings = vim.tbl_extend('force', cfg.mbsync, {
    accounts = accounts,
    auth_refresh = refreshable,
    max_parallel = cfg.max_parallel,
    max_connections = cfg.max_connections,
    relay_cmd = derived.relay_cmd,
    retry = cfg.retry,
    uidvalidity = cfg.uidvalidity,
    responsive = cfg.responsive,
    state_dir = derived.state_dir,
    config = derived.config,
    oauth = oauth,
  })
  local done, e = lib.manager_configure(settings)
  if not done then
    ---@cast e -?
    return nil, e.message
  end
  lib.log_open(cfg.log and M.log_path() or nil)
  -- mbsync's PassCmd (`himalaya-sync token NAME`) runs as our grandchild
  -- and finds the OAuth settings in this state folder, and the lock folder
  -- this Neovim uses: its `oauth-NAME` lock must be the one Neovim takes
  -- (with `lock_dir` set, the tool's default would be another folder).
  vim.env.HIMALAYA_SYNC_STATE_DIR = settings.state_dir
  vim.env.HIMALAYA_SYNC_LOCK_DIR = lib.lock_open(nil)
  configured = { lib = lib, cfg = cfg }
  return lib
end
M._ready = ready

--- Runs the account's `refresh` function after an auth failure and tells
--- the engine how it went (once per sync; a refresh that never answers is
--- ended by cancelling the sync).
---@param info {id: integer, account: string} a `sync_auth` event's SyncInfo
function M._refresh(info)
  local lib = native.get()
  local ok, cfg = pcall(config.get)
  local acct = ok and cfg.accounts[info.account] or nil
  if lib and acct and not acct.refresh and acct.oauth then
    -- The kind tells a provider out of reach (retried) from credentials
    -- that are no good (re-authorization needed).
    require('himalaya.sync.oauth').refresh_token(info.account, function(success, err, kind)
      lib.sync_auth_refreshed(info.id, success == true, err, kind)
    end)
    return
  end
  if not (lib and acct and acct.refresh) then
    if lib then
      lib.sync_auth_refreshed(info.id, false, 'no refresh function is configured')
    end
    return
  end
  local answered = false
  local function done(success, err)
    if answered then
      return
    end
    answered = true
    -- Vimscript's true is also any Number but 0 (`v:shell_error == 0`).
    local fresh = success == true or (type(success) == 'number' and success ~= 0)
    vim.schedule(function()
      lib.sync_auth_refreshed(info.id, fresh, err and tostring(err) or nil)
    end)
  end
  local refresh = acct.refresh
  if type(refresh) == 'string' then
    -- A Vimscript function's name: `done` reaches it as a Funcref.
    refresh = function(...)
      return vim.fn.call(acct.refresh, { ... })
    end
  end
  local called, err = pcall(refresh, info.account, done)
  if not called then
    done(false, err)
  end
end

--- With `uidvalidity = 'ask'`, offers to repair the folder that broke a sync.
--- Once per folder: not again while the question is open, nor, after "Not
--- now", for the syncs of auto-sync and IDLE (which would ask at every
--- tick); a sync started by hand asks again.
---@param info himalaya.sync.SyncInfo
---@param by_hand? boolean some request for the sync was not an automatic one
function M._offer_repair(info, by_hand)
  local ok, cfg = pcall(config.get)
  if not ok or cfg.uidvalidity ~= 'ask' then
    return
  end
  local channel = info.damaged_channel or info.account
  local key = channel .. '\0' .. info.damaged
  local asked = S.repair_asked[key]
  if asked == 'open' or (asked == 'declined' and not by_hand) then
    return
  end
  S.repair_asked[key] = 'open'
  local prompt = ('himalaya-sync: %s. Repair it without loss?'):format(info.damaged_why)
  vim.ui.select({ 'Repair now', 'Not now' }, { prompt = prompt }, function(choice)
    S.repair_asked[key] = choice ~= 'Repair now' and 'declined' or nil
    if choice == 'Repair now' then
      local id, err = M.start_sync('repair', { account = channel, folders = { info.damaged } })
      if not id then
        vim.notify(
          ('himalaya-sync: cannot repair %s of %s: %s'):format(info.damaged, channel, err),
          vim.log.levels.ERROR
        )
      end
    end
  end)
end

--- The engine's log file (`stdpath('log')/himalaya-sync.log`).
---@return string
function M.log_path()
  return vim.fn.stdpath('log') .. '/himalaya-sync.log'
end

---@param lib himalaya.sync.NativeLib a library made ready
---@return himalaya.sync.Target[]? targets
---@return string? err
local function targets_of(lib)
  local list, e = lib.mbsync_targets()
  if not list then
    ---@cast e -?
    return nil, e.message
  end
  return list
end

--- The mbsync target to sync for account `name`: the name itself when the
--- mbsyncrc has it, else the target of the himalaya account of that name.
--- Without a name, the only target in the mbsyncrc, or himalaya's default
--- account when there are several, else the one group that covers them.
---@param lib himalaya.sync.NativeLib a library made ready
---@param name? string
---@return string? target
---@return string? err
local function target_for(lib, name)
  if name then
    if lib.mbsync_has_target(name) then
      return name
    end
    return require('himalaya.sync.himalaya').target_of(name) or name
  end
  local targets, err = targets_of(lib)
  if not targets then
    return nil, err
  end
  if #targets == 1 then
    return targets[1].name
  end
  local target, herr = require('himalaya.sync.himalaya').default_target()
  if target then
    return target
  elseif herr then
    return nil, herr
  end
  -- One group that covers every channel (`Group all`): what `mbsync -a`
  -- would sync, and what auto-sync and IDLE take.
  local whole = vim.tbl_filter(function(t)
    return not t.grouped
  end, targets)
  if #whole == 1 then
    return whole[1].name
  end
  local names = vim.tbl_map(function(t)
    return t.name
  end, targets)
  return nil,
    #names == 0 and 'no Channel or Group in the mbsyncrc' or ('which account? one of: %s'):format(
      table.concat(names, ', ')
    )
end

---@class himalaya.sync.Target
---@field name string
---@field kind 'channel'|'group'
---@field grouped boolean a channel that some group syncs, or a group another group covers
---@field syncs himalaya.sync.SyncType[] the sync types it takes (a group of several channels takes no folders sync)

--- Every channel and group in the mbsyncrc (each is an account name).
---@return himalaya.sync.Target[]? targets
---@return string? err
function M.list_targets()
  local lib, err = ready()
  if not lib then
    return nil, err
  end
  return targets_of(lib)
end

--- The accounts that together sync everything once: every group that no
--- other group covers, and every channel that no group syncs already (what
--- auto-sync and IDLE cover when not told which accounts).
---@return string[] names
---@return string? err why there are none when the mbsyncrc cannot be read
function M.whole_accounts()
  local targets, err = M.list_targets()
  local names = {}
  for _, t in ipairs(targets or {}) do
    if not t.grouped then
      names[#names + 1] = t.name
    end
  end
  return names, err
end

--- The account to use when none is given (see target_for).
---@return string? account
---@return string? err
function M.default_account()
  local lib, err = ready()
  if not lib then
    return nil, err
  end
  return target_for(lib)
end

--- The mbsync target for an account name (see target_for).
---@param name string
---@return string
function M.resolve_account(name)
  local lib = ready()
  return lib and target_for(lib, name) or require('himalaya.sync.himalaya').target_of(name) or name
end

--- What is wrong with an account name from a caller, if anything, as an
--- error naming the parameter `name` as the caller wrote it (a function
--- that takes the account as an argument says `account`, not the option it
--- becomes).
---@param v any nil for the default account
---@param name string
---@return string? err
function M._bad_account(v, name)
  if v ~= nil and _G.type(v) ~= 'string' then
    return ('invalid %s: expected a string, got %s'):format(name, native.shown(v))
  elseif v and not config.is_utf8(v) then
    return ('invalid %s %s: not UTF-8 text'):format(name, native.shown(v))
  end
end

--- The same for a list of folder names.
---@param v any
---@param name string
---@return string? err
function M._bad_folders(v, name)
  if
    v ~= nil
    and (
      _G.type(v) ~= 'table'
      or not vim.islist(v)
      -- Neovim types vim.iter as `@operator call:Iter`, without parameters.
      ---@diagnostic disable-next-line: redundant-parameter
      or vim.iter(v):any(function(f)
        return _G.type(f) ~= 'string' or not config.is_utf8(f)
      end)
    )
  then
    return ('invalid %s: expected a list of folder names (UTF-8 text), got %s'):format(name, native.shown(v))
  end
end

--- The fields of himalaya.sync.StartOptions.
local START_OPTIONS = native.known_keys({ 'account', 'folders', 'wait', 'on_progress', 'on_complete', 'auto', 'quiet' })

--- Starts a sync; returns its id, or `nil, err, kind`. Never blocks: the
--- callbacks run on the main loop as the sync progresses and ends.
---@param type himalaya.sync.SyncType
---@param options? himalaya.sync.StartOptions
---@return integer? id
---@return string? err
---@return string? kind
function M.start_sync(type, options)
  if not SYNC_TYPES[type] then
    return nil,
      ('unknown sync type %s: expected "full", "inbox", "folders", "repair" or "check"'):format(native.shown(type)),
      'invalid'
  end
  options = options or {}
  if _G.type(options) ~= 'table' then
    return nil, 'invalid options: expected a table', 'invalid'
  end
  local unknown = native.unknown_key(options, START_OPTIONS, 'options', 'option')
  if unknown then
    return nil, unknown, 'invalid'
  end
  if options.folders ~= nil and (type == 'full' or type == 'inbox') then
    return nil, ('invalid options.folders: a %s sync takes no folders (use type "folders")'):format(type), 'invalid'
  end
  for _, k in ipairs({ 'on_progress', 'on_complete' }) do
    if options[k] ~= nil and not vim.is_callable(options[k]) then
      return nil, ('invalid options.%s: expected a function'):format(k), 'invalid'
    end
  end
  for _, k in ipairs({ 'auto', 'quiet' }) do
    if options[k] ~= nil and _G.type(options[k]) ~= 'boolean' then
      return nil, ('invalid options.%s: expected a boolean, got %s'):format(k, native.shown(options[k])), 'invalid'
    end
  end
  local bad = M._bad_account(options.account, 'options.account') or M._bad_folders(options.folders, 'options.folders')
  if bad then
    return nil, bad, 'invalid'
  end
  if
    options.wait ~= nil
    and (_G.type(options.wait) ~= 'number' or not (options.wait >= 0 and options.wait <= config.MAX_SECONDS))
  then
    return nil,
      ('invalid options.wait: expected seconds from 0 to %d, got %s'):format(
        config.MAX_SECONDS,
        native.shown(options.wait)
      ),
      'invalid'
  end
  local lib, err, kind = ready()
  if not lib then
    return nil, err, kind or 'config'
  end
  local account, aerr = target_for(lib, options.account)
  if not account then
    return nil, aerr, 'config'
  end
  local id, e
  if type == 'check' then
    -- The fast check: STATUS per folder, answered as a sync of type check.
    id, e = lib.sync_check(account, options.folders)
  else
    id, e = lib.sync_start(type, account, options.folders, options.wait or 0)
  end
  if not id then
    ---@cast e himalaya.sync.LibError
    return nil, e.message, e.kind
  end
  -- The engine tells of a new sync once mbsync runs, or that it waits for
  -- a slot, through an event handled a moment later: until then it is
  -- known here as accepted, so that is_busy(), get_sync_info() and the
  -- status line see it as soon as this returns.
  if not syncs[id] then
    remember({
      id = id,
      type = type,
      account = account,
      folders = options.folders or {},
      status = 'running',
      start_time = os.time(),
      attempt = 1,
      requests = 1,
      message = 'syncing ' .. account,
    })
    -- The status line text is computed here, not on redraw. The update
    -- is coalesced with the engine's first event when that comes in the
    -- same loop turn.
    M.notify_ui_update()
  end
  -- The id may be a sync that already covers this request (coalesced):
  -- its callbacks then fire when that sync ends.
  callbacks[id] = callbacks[id] or {}
  table.insert(callbacks[id], { on_progress = options.on_progress, on_complete = options.on_complete })
  wanted[id] = wanted[id] or not options.auto
  -- Quiet only while every request covered by this sync asked for it.
  quiet[id] = (quiet[id] ~= false) and options.quiet == true
  return id
end

---@class himalaya.sync.FolderCounts
---@field folder string mbsync's name, as its Maildir keeps it: INBOX, Archive/2024, Entw&APw-rfe (mbsync 1.3 and 1.4)...
---@field total integer messages, without trashed ones
---@field unread integer
---@field flagged integer
---@field trashed integer messages marked deleted, not yet expunged
---@field store? string the MaildirStore it is in, when the account's channels sync into several (a Group of accounts: each has an INBOX)

--- Exact counts of every local folder of `account` (default: the only
--- account), read straight from the Maildir now. A finished sync's info
--- carries the same list as `counts`.
---@param account? string
---@return himalaya.sync.FolderCounts[]? counts
---@return string? err
function M.get_folder_counts(account)
  local bad = M._bad_account(account, 'account')
  if bad then
    return nil, bad
  end
  local lib, err = ready()
  if not lib then
    return nil, err
  end
  local target, aerr = target_for(lib, account)
  if not target then
    return nil, aerr
  end
  account = target
  local counts, e = lib.folder_counts(account)
  if not counts then
    ---@cast e -?
    return nil, e.message
  end
  return counts
end

--- Cancels one sync or check by id, or every one of this Neovim. Returns
--- how many were asked to stop: one asked already is not counted again
--- (0 and a message saying why nothing more was asked to stop).
---@param id? integer
---@return integer
---@return string? err
function M.cancel_sync(id)
  -- Ids count up from 1; above 2^53 a number is no exact whole number.
  if id ~= nil and (type(id) ~= 'number' or id < 0 or id % 1 ~= 0 or id > 2 ^ 53) then
    return 0, ('invalid sync id %s: expected a whole number'):format(native.shown(id))
  end
  if not native.is_loaded() then
    -- Nothing has run in this Neovim.
    return 0, id and ('sync #%d is not running or waiting in this Neovim'):format(id) or nil
  end
  local lib = native.get()
  -- Loaded, so get() returns it.
  ---@cast lib -?
  local n = lib.sync_cancel(id) or 0
  local stopping = 0
  for sid, info in pairs(syncs) do
    if sid ~= 0 and not FINAL[info.status] and (id == nil or id == sid) then
      if n > 0 then
        S.cancelling[sid] = true
      elseif S.cancelling[sid] then
        stopping = stopping + 1
      end
    end
  end
  if n > 0 then
    return n
  end
  local info = id and syncs[id]
  if id and not info then
    return 0, ('sync #%d is not running or waiting in this Neovim'):format(id)
  elseif info and FINAL[info.status] then
    return 0, ('sync #%d has ended already (%s)'):format(id, info.status)
  elseif id and stopping > 0 then
    return 0, ('sync #%d is being cancelled already'):format(id)
  elseif id then
    -- Its end is on its way from the engine.
    return 0, ('sync #%d is ending already'):format(id)
  elseif stopping > 0 then
    return 0, ('%d sync%s being cancelled already'):format(stopping, stopping == 1 and ' is' or 's are')
  end
  return 0
end

--- True while a sync of this Neovim runs.
---@return boolean
function M.is_busy()
  return M._own_busy() or (syncs[0] ~= nil and syncs[0].status == 'running')
end

--- Whether `cancel_sync()` asked sync `id` to stop and it has not ended.
---@param id integer
---@return boolean
function M._cancelling(id)
  return S.cancelling[id] == true
end

--- True while a sync this Neovim started runs; one reported from outside
--- (`update_progress()`, `complete_sync()`) does not count.
---@return boolean
function M._own_busy()
  for _, info in pairs(syncs) do
    if info.id ~= 0 and not FINAL[info.status] then
      return true
    end
  end
  return false
end

--- A new build replaced the library (`:HimalayaSync build`). The syncs of
--- other processes were the old one's to watch: forgotten, and the new one
--- is configured at once, which starts its watch (it tells what it finds).
function M._library_replaced()
  if #S.elsewhere > 0 then
    S.elsewhere = {}
    M.notify_ui_update()
  end
  ready()
end

--- The state of syncing: the current (or last) sync's fields, plus `syncs`,
--- every sync of this Neovim. Read-only: the entries of finished syncs are
--- shared between calls.
---@return himalaya.sync.SyncState
function M.get_sync_info()
  -- The newest running sync, else the newest that has not ended (queued,
  -- retrying), else the one that ended last.
  local list, running, waiting = {}, nil, nil
  for _, id in ipairs(order) do
    local info = syncs[id]
    list[#list + 1] = snapshot(info)
    if info.status == 'running' then
      running = info
    elseif not info.end_time then
      waiting = info
    end
  end
  local primary = running or waiting or last_ended()
  ---@type himalaya.sync.SyncState
  local out = primary and vim.deepcopy(primary) or { status = 'idle' }
  out.syncs = list
  out.queue = vim.tbl_filter(function(i)
    return i.status == 'queued' or i.status == 'retrying'
  end, list)
  out.elsewhere = vim.deepcopy(S.elsewhere)
  return out
end

---@class himalaya.sync.History
---@field last_success? number unix seconds of the last successful sync
---@field last_sync? number unix seconds of the last sync, however it ended
---@field last_type? string
---@field last_full? number unix seconds of the last successful full sync
---@field last_inbox? number unix seconds of the last successful inbox or full sync
---@field last_error? {kind: string, message: string, time: number}
---@field last_duration? number seconds
---@field syncs_today integer syncs finished on the local date `day`
---@field day string YYYY-MM-DD

--- Sync history per account (last success, last error, syncs today, last
--- duration), shared by every Neovim and kept across restarts. A sync of
--- this Neovim is in it as soon as its end is told.
---@return table<string, himalaya.sync.History>? history
---@return string? err
function M.history()
  local lib, err = ready()
  if not lib then
    return nil, err
  end
  local h, e = lib.sync_history()
  if e then
    return nil, e.message
  end
  return h or {}
end

--- Calls `fn(info)` after sync state changes (at most once per event-loop
--- turn). Returns a function that unsubscribes.
---@param fn fun(info: himalaya.sync.SyncInfo)
---@return fun()? unsubscribe
---@return string? err
---@return string? kind
function M.on_update(fn)
  if not vim.is_callable(fn) then
    return nil, ('invalid listener %s: expected a function'):format(native.shown(fn)), 'invalid'
  end
  listeners[#listeners + 1] = fn
  return function()
    for i, f in ipairs(listeners) do
      if f == fn then
        table.remove(listeners, i)
        return
      end
    end
  end
end

--- Text for a status line: empty when idle, else what runs (`sync demo 42%`),
--- waits or failed last. Cheap: computed when state changes.
---@return string
function M.statusline()
  return S.status_text
end

--- A message count: a finite number, 0 or more.
---@param v any
---@return boolean
local function count(v)
  return _G.type(v) == 'number' and v >= 0 and v < math.huge
end

--- The fields of himalaya.sync.Progress, and of its sides.
local PROGRESS_FIELDS = native.known_keys({ 'channels', 'boxes', 'far', 'near', 'truncated', 'percent', 'box' })
--- For the old names (legacy.lua), which pass on only these fields.
M._progress_fields = PROGRESS_FIELDS
local SIDE_FIELDS = native.known_keys({ 'new', 'flags', 'trash', 'expunge' })

--- The error for a counter that is not `{done = n, total = n}`, if any.
---@param c any
---@param name string where it is: `boxes`, `near.new`...
---@return string? err
local function bad_counter(c, name)
  if c ~= nil and not (_G.type(c) == 'table' and count(c.done) and count(c.total)) then
    return ('invalid progress: %s %s: expected {done = n, total = n}'):format(name, native.shown(c))
  end
end

--- What is wrong with a progress table from outside the engine, if
--- anything, as an error message: it is stored and shown (status line,
--- `:HimalayaSync status`), so a bad one must not get in.
---@param p any
---@return string? err
local function bad_progress(p)
  if _G.type(p) ~= 'table' then
    return ('invalid progress: %s: expected a table'):format(native.shown(p))
  end
  local unknown = native.unknown_key(p, PROGRESS_FIELDS, 'progress', 'field')
  if unknown then
    return unknown
  end
  local pct = p.percent
  if pct ~= nil and (_G.type(pct) ~= 'number' or not (pct >= 0 and pct <= 100)) then
    return ('invalid progress: percent %s: expected a number from 0 to 100'):format(native.shown(pct))
  end
  if p.box ~= nil and not config.is_plain(p.box, 1000) then
    return ('invalid progress: box %s: expected a folder name (1 to 1000 bytes, no control characters)'):format(
      native.shown(p.box)
    )
  end
  for _, k in ipairs({ 'channels', 'boxes' }) do
    local err = bad_counter(p[k], k)
    if err then
      return err
    end
  end
  local cut = p.truncated
  if cut ~= nil and _G.type(cut) ~= 'boolean' and cut ~= 0 and cut ~= 1 then
    return ('invalid progress: truncated %s: expected true or false'):format(native.shown(cut))
  end
  for _, side in ipairs({ 'near', 'far' }) do
    local s = p[side]
    if s ~= nil then
      if _G.type(s) ~= 'table' then
        return ('invalid progress: %s %s: expected a table'):format(side, native.shown(s))
      end
      unknown = native.unknown_key(s, SIDE_FIELDS, 'progress.' .. side, 'field')
      if unknown then
        return unknown
      end
      for _, k in ipairs({ 'new', 'flags', 'trash', 'expunge' }) do
        local err = bad_counter(s[k], side .. '.' .. k)
        if err then
          return err
        end
      end
    end
  end
end

--- Reports progress of a sync run outside the engine (other code can feed
--- the manager, as in the original plugin).
---@param progress table
---@return boolean ok
---@return string? err
---@return string? kind
function M.update_progress(progress)
  local bad = bad_progress(progress)
  if bad then
    return false, bad, 'invalid'
  end
  local info = syncs[0]
  if not info or FINAL[info.status] then
    -- A new outside sync: nothing of the last one's end carries over.
    info = { id = 0, status = 'running', type = 'external', start_time = os.time() }
  end
  info.status = 'running'
  if _G.type(progress.truncated) == 'number' then
    -- Vimscript's 0 or 1, as a boolean in a copy: the caller's table is
    -- left as given.
    progress = vim.tbl_extend('force', {}, progress, { truncated = progress.truncated == 1 })
  end
  info.progress = progress
  remember(info)
  M.notify_ui_update()
  return true
end

--- The fields of himalaya.sync.Result.
local RESULT_FIELDS = native.known_keys({
  'success',
  'error',
  'kind',
  'duration',
  'waited',
  'attempts',
  'pulled',
  'pushed',
  'flags_changed',
  'trashed',
})

--- Marks the externally reported sync as finished.
---@param type string
---@param result? himalaya.sync.Result|table
---@return boolean ok
---@return string? err
---@return string? kind
function M.complete_sync(type, result)
  if not config.is_plain(type, 100) then
    return false,
      ('invalid type %s: expected a name (1 to 100 bytes, no control characters)'):format(native.shown(type)),
      'invalid'
  end
  if result ~= nil then
    if _G.type(result) ~= 'table' then
      return false, ('invalid result %s: expected a table'):format(native.shown(result)), 'invalid'
    end
    local unknown = native.unknown_key(result, RESULT_FIELDS, 'result', 'field')
    if unknown then
      return false, unknown, 'invalid'
    elseif result.success ~= nil and _G.type(result.success) ~= 'boolean' then
      return false, ('invalid result.success %s: expected a boolean'):format(native.shown(result.success)), 'invalid'
    elseif result.error ~= nil and (_G.type(result.error) ~= 'string' or #result.error > 1000) then
      return false,
        ('invalid result.error %s: expected a message of at most 1000 bytes'):format(native.shown(result.error)),
        'invalid'
    elseif result.kind ~= nil and not config.is_plain(result.kind, 100) then
      return false,
        ('invalid result.kind %s: expected a name (1 to 100 bytes, no control characters)'):format(
          native.shown(result.kind)
        ),
        'invalid'
    end
    -- What listeners and the status line read as numbers.
    for _, k in ipairs({ 'duration', 'waited', 'attempts', 'pulled', 'pushed', 'flags_changed', 'trashed' }) do
      local v = result[k]
      local whole = k ~= 'duration' and k ~= 'waited'
      if v ~= nil and (_G.type(v) ~= 'number' or v ~= v or v < 0 or v == math.huge or (whole and v % 1 ~= 0)) then
        return false,
          ('invalid result.%s %s: expected a %s'):format(
            k,
            native.shown(v),
            whole and 'whole number, 0 or more' or 'number of seconds, 0 or more'
          ),
          'invalid'
      end
    end
  end
  local info = syncs[0] or { id = 0, start_time = os.time() }
  info.type = type
  info.end_time = os.time()
  info.result = result
  info.status = (result and result.success) and 'completed' or 'error'
  info.message = result and result.error or nil
  -- As an engine sync's: the status line and `:HimalayaSync status` show
  -- it. Nothing classified it, so its kind is unknown.
  local why = info.message or 'the sync failed'
  info.error = info.status == 'error' and { kind = 'unknown', message = why, line = why } or nil
  remember(info)
  M.notify_ui_update()
  return true
end

--- Tells the UI that sync state changed: fires `User HimalayaSyncUpdate`
--- (its data: the info, with only the syncs not ended or newly ended),
--- calls `on_update` listeners with the whole info and redraws status
--- lines, once per event-loop turn however often it is called (at once
--- when a sync ended: see on_event).
local ui_pending = false
--- The status line text last drawn.
local drawn_status = ''
function M.notify_ui_update()
  S.status_text = compute_status()
  if ui_pending then
    return
  end
  ui_pending = true
  vim.schedule(M._flush_ui_update)
end

--- Tells the status line and listeners now what notify_ui_update() asked
--- for; nothing when that was done already.
function M._flush_ui_update()
  if not ui_pending then
    return
  end
  ui_pending = false
  -- Nothing is copied or converted for nobody: this runs up to five times
  -- a second per sync, and each piece costs the editor's thread about
  -- 0.1 ms on a machine busy with the sync.
  local heard = listened()
  if heard or #listeners > 0 then
    local info = M.get_sync_info()
    if heard then
      -- The event leaves out syncs that ended before the previous one:
      -- its data is copied twice on the way to each listener, and the
      -- whole history (20 syncs with their folder counts) cost about
      -- 0.5 ms per update.
      fire(
        'HimalayaSyncUpdate',
        vim.tbl_extend('force', {}, info, {
          syncs = vim.tbl_filter(function(s)
            return not FINAL[s.status] or S.ended_unseen[s.id] ~= nil
          end, info.syncs),
        })
      )
    end
    -- A copy of the list: a listener that unsubscribes (itself or another)
    -- must not make the next one miss this update.
    for _, fn in ipairs({ unpack(listeners) }) do
      call(fn, info)
    end
  end
  S.ended_unseen = {}
  if S.status_text ~= drawn_status then
    drawn_status = S.status_text
    vim.cmd.redrawstatus({ bang = true })
  end
end

return M
