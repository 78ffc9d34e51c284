--- Auto-sync: sync every `auto_sync.interval` minutes.
---
--- Every Neovim with auto-sync on runs the timer, but only one of them, the
--- leader, starts syncs: leadership is the named lock `auto-sync`, taken
--- without waiting at a tick and held until that Neovim exits or turns
--- auto-sync off. When the leader goes, the kernel frees the lock and
--- another Neovim takes over at its next tick; no heartbeat files.
--- A tick skips an account that synced recently (shared history), so a
--- change of leader never syncs twice.
local config = require('himalaya.sync.config')
local uv = vim.uv

local M = {}

local LEADER_LOCK = 'auto-sync'

---@class himalaya.sync.AutoState
---@field timer? uv.uv_timer_t
---@field leader boolean this Neovim holds the leader lock
---@field smart_ticks table<string, integer> per account, smart ticks since its last plain one
---@type himalaya.sync.AutoState
local S = require('himalaya.sync.native').state('auto', { leader = false, smart_ticks = {} })

--- With `smart`, every this many ticks of an account one syncs without a
--- check first: the check sees new mail on the server and changes here,
--- but not flags changed, messages deleted or moved on the server.
local SMART_PLAIN_EVERY = 4

local function log(msg)
  require('himalaya.sync.native').log('info', 'auto-sync: ' .. msg)
end

--- A problem that keeps auto-sync from syncing (an unknown account, an
--- unreadable mbsyncrc, no library): see native.problem.
---@param msg string
local function problem(msg)
  require('himalaya.sync.native').problem('auto-sync', msg)
end

--- The accounts the timer syncs, or why there are none.
---@return string[] names
---@return string? why
local function account_list()
  local cfg = config.get()
  if cfg.auto_sync.accounts then
    return cfg.auto_sync.accounts
  end
  local names, err = require('himalaya.sync.manager').whole_accounts()
  if #names == 0 then
    return names, 'no account to sync: ' .. (err or 'the mbsyncrc has no Channel or Group')
  end
  return names
end

--- The accounts the timer syncs; none is a problem shown once.
---@return string[]
local function accounts()
  local names, why = account_list()
  if why then
    problem(why)
  end
  return names
end

--- What a smart tick syncs after a check found `changed` folders of
--- `account`: nothing when nothing changed; the inbox alone when only INBOX
--- did (or when the timer syncs inboxes only); else the changed folders, or
--- the timer's type when they cannot be named in one folders sync.
---@param type 'full'|'inbox' the timer's sync type
---@param changed string[] folders with new mail (server names)
---@param boxes string[] the same as mbsync names them (empty: unknown)
---@return string? type
---@return string[]? folders
function M._smart_plan(type, changed, boxes)
  local inbox = vim.tbl_contains(changed, 'INBOX')
  if #changed == 0 or (type == 'inbox' and not inbox) then
    return nil
  end
  if type == 'inbox' or (#changed == 1 and inbox) then
    return 'inbox'
  end
  if #boxes ~= #changed then
    return type
  end
  for _, f in ipairs(boxes) do
    -- mbsync takes folders as `channel:a,b`; names it cannot take there
    -- (a comma, non-ASCII names it stores in modified UTF-7) sync whole.
    if f:find('[,%c\128-\255]') then
      return type
    end
  end
  return 'folders', boxes
end

--- Starts one sync of a tick. Timer syncs are quiet (notify.auto); the
--- manager tells once of one that fails in a way the next will too.
---@param type himalaya.sync.SyncType
---@param account string
---@param folders? string[]
---@param wait number
local function start_sync(type, account, folders, wait)
  local id, err = require('himalaya.sync.manager').start_sync(type, {
    account = account,
    folders = folders,
    auto = true,
    wait = wait,
  })
  if not id then
    problem(('could not start %s: %s'):format(account, err))
  end
end

--- How long a tick's sync waits while another process (another Neovim's
--- `:HimalayaSync`, the command-line tool) syncs the account: up to half
--- the interval, then the next tick comes. It runs after that sync instead
--- of ending with a `locked` error that the status line would show.
---@return number seconds
local function lock_wait()
  return config.get().auto_sync.interval * 60 / 2
end

--- A smart tick for one account: the fast check first, then a sync of
--- what changed. A failed check falls back to the plain sync, whose error
--- is then reported like any auto-sync error.
local function smart_sync(account, sync_type)
  local manager = require('himalaya.sync.manager')
  local function start(t, folders)
    start_sync(t, account, folders, lock_wait())
  end
  local id, err = manager.start_sync('check', {
    account = account,
    auto = true,
    on_complete = function(result)
      -- A check ends with a CheckResult.
      ---@cast result himalaya.sync.CheckResult
      if result.kind == 'cancelled' then
        log(('check of %s cancelled; not syncing it'):format(account))
        return
      end
      if not result.success then
        log(('check of %s failed (%s); syncing it'):format(account, result.error))
        return start(sync_type)
      end
      local t, folders = M._smart_plan(sync_type, result.changed, result.changed_boxes or {})
      if not t then
        log(('skipped %s: nothing new on the server'):format(account))
        return
      end
      local ok, e = pcall(start, t, folders)
      if not ok then
        problem(('could not start %s: %s'):format(account, e))
      end
    end,
  })
  if not id then
    problem(('could not check %s: %s'):format(account, err))
  end
end

--- Starts the syncs a tick is for: every account that no sync of the
--- tick's kind brought up to date recently (by any Neovim, or by hand). Only
--- a sync that covers the tick's counts: a successful full sync for a full
--- tick, an inbox or full one for an inbox tick. Inbox syncs of IDLE or by
--- hand, failed and cancelled syncs leave the full sync due.
local function sync_due()
  local cfg = config.get()
  local manager = require('himalaya.sync.manager')
  local history = manager.history() or {}
  local recent = cfg.auto_sync.interval * 60 / 2
  local kind = cfg.auto_sync.type
  -- The history has fractions of a second; os.time() would be up to a
  -- second behind them and skip a sync that is due.
  local sec, usec = uv.gettimeofday()
  local now = sec + usec / 1e6
  for _, account in ipairs(accounts()) do
    local h = history[account] or {}
    local covered = h.last_inbox
    if kind == 'full' then
      covered = h.last_full
    end
    if covered and now - covered < recent then
      log(('skipped %s: its %s sync succeeded %.1f s ago'):format(account, kind, now - covered))
    elseif cfg.auto_sync.smart and (S.smart_ticks[account] or 0) < SMART_PLAIN_EVERY - 1 then
      S.smart_ticks[account] = (S.smart_ticks[account] or 0) + 1
      smart_sync(account, kind)
    else
      S.smart_ticks[account] = 0
      start_sync(kind, account, nil, lock_wait())
    end
  end
end

--- One tick: become leader if nobody is, then sync what is due. Without
--- the timer (auto-sync off here) the lead is given up again at once, so
--- that the auto-sync of other Neovims goes on.
function M.tick()
  local lock = require('himalaya.sync.lock')
  if not S.leader then
    local got, err, kind = lock.acquire_lock(LEADER_LOCK, 0)
    S.leader = got == true
    if S.leader then
      log(('this Neovim (pid %d) leads auto-sync'):format(vim.fn.getpid()))
    else
      -- Locked: another Neovim leads. Anything else keeps every tick from
      -- syncing, so it is shown.
      if kind ~= 'locked' then
        problem(('cannot take the lead: %s'):format(err))
      end
      return
    end
  end
  local ok, err = pcall(sync_due)
  if not S.timer then
    M.stop()
  end
  -- A tick runs from a timer: an error raised here would be a traceback at
  -- every tick. Told once instead, as a problem the user can fix (an
  -- invalid configuration, most likely).
  if not ok then
    problem(('cannot sync: %s'):format(err))
  end
end

--- Starts the timer (first tick after one interval).
--- Safe from a libuv callback: it uses nothing that needs the main loop
--- (its ticks run there).
function M.start()
  if S.timer then
    return
  end
  S.smart_ticks = {}
  local ms = math.max(1, math.floor(config.get().auto_sync.interval * 60 * 1000))
  local timer = assert(uv.new_timer())
  S.timer = timer
  -- Ticks run the module as loaded now (a plugin reloader's new copy). A
  -- tick queued before stop() is dropped, as IDLE drops its tries.
  timer:start(
    ms,
    ms,
    vim.schedule_wrap(function()
      if S.timer == timer then
        require('himalaya.sync.auto').tick()
      end
    end)
  )
end

--- Stops the timer and gives up leadership.
function M.stop()
  if S.timer then
    S.timer:stop()
    S.timer:close()
    S.timer = nil
  end
  if S.leader then
    require('himalaya.sync.lock')._release(LEADER_LOCK)
    S.leader = false
    log('stopped; leadership released')
  end
end

--- Called when the library is replaced: the next tick competes again.
function M._lost_leadership()
  S.leader = false
end

---@return boolean
function M.is_enabled()
  return S.timer ~= nil
end

---@return boolean
function M.is_leader()
  return S.leader
end

--- One line on auto-sync in this Neovim, for `:HimalayaSync auto`.
---@return string
function M.describe()
  if not S.timer then
    return 'auto-sync is off'
  end
  local opts = config.get().auto_sync
  local minutes = opts.interval
  local every = minutes < 1 and ('%g s'):format(math.floor(minutes * 60 + 0.5)) or ('%g min'):format(minutes)
  local lead = ' (this Neovim leads)'
  if not S.leader then
    -- The lead is taken at a tick, the first one an interval after start.
    lead = ' (no Neovim leads yet: the first to tick takes the lead)'
    for _, l in ipairs(require('himalaya.sync.lock').list_locks()) do
      if l.name == LEADER_LOCK and l.held then
        lead = l.pid and (' (%s %d leads)'):format(l.process or 'pid', l.pid) or ' (another process leads)'
      end
    end
  end
  local names, why = account_list()
  local what = why
    or ('%s sync of %s%s'):format(
      opts.type,
      table.concat(names, ', '),
      opts.smart and ' when a check finds new mail' or ''
    )
  return ('auto-sync is on, every %s%s: %s'):format(every, lead, what)
end

--- What keeps auto-sync from working, for :checkhealth: no account to
--- sync, or an account whose last sync (in any Neovim) failed in a way
--- the next one will too (auth, config), after its last success.
---@return string[]
function M.problems()
  local names, why = account_list()
  local out = {}
  if why then
    out[1] = why
  end
  local manager = require('himalaya.sync.manager')
  local history = manager.history() or {}
  for _, account in ipairs(names) do
    local h = history[account] or {}
    local e = h.last_error
    if e and manager._LASTING[e.kind] and (h.last_success or 0) < e.time then
      out[#out + 1] = ('the last sync of %s failed (%s): %s'):format(account, e.kind, e.message)
    end
  end
  return out
end

--- Turns auto-sync on or off; returns the new state.
---@return boolean
function M.toggle()
  if S.timer then
    M.stop()
  else
    M.start()
  end
  return S.timer ~= nil
end

return M
