--- Push (`require('himalaya.sync.idle')`): IMAP IDLE watchers that start a
--- sync as soon as new mail arrives (`idle = { enabled = true }`).
---
--- The engine keeps one connection per watched folder, re-enters IDLE
--- before the server's timeout, reconnects with backoff and starts a
--- coalesced sync of the folder (an inbox sync for INBOX) on new mail.
---
--- Exactly one Neovim watches: the one holding the named lock `idle-watch`,
--- taken without waiting. The others try again every `RETRY_MS`, so when
--- the watcher's Neovim exits (the kernel frees its lock) another one takes
--- over. Watchers stop when Neovim exits or `stop()` is called.
---
--- A watcher that meets an error retrying cannot fix (wrong credentials, a
--- folder missing on the server) stops for good and says so; when no folder
--- is left, IDLE turns itself off and frees the lock (another Neovim would
--- only meet the same error) until `start()` (`:HimalayaSync idle on`).
local config = require('himalaya.sync.config')
local uv = vim.uv

local M = {}

local LOCK = 'idle-watch'
M.RETRY_MS = 30000

---@class himalaya.sync.IdleState
---@field timer? uv.uv_timer_t
---@field watching boolean this Neovim runs the watchers
---@field stopped table<integer, true?> the serial numbers of watchers that stopped for good
---@field gave_up? string why IDLE turned itself off, until the next start()
---@field why_not? string why the last try did not watch, when not because another Neovim does
---@field warned_now? boolean the last try that did not watch showed a warning (see M.try_now)
---@type himalaya.sync.IdleState
local S = require('himalaya.sync.native').state('idle', { watching = false, stopped = {} })

--- The accounts to watch: `idle.accounts`, else those auto-sync syncs.
---@return string[] accounts
---@return string? err why there are none (the mbsyncrc cannot be read)
local function accounts()
  local cfg = config.get()
  local named = cfg.idle.accounts or cfg.auto_sync.accounts
  if named then
    return named
  end
  return require('himalaya.sync.manager').whole_accounts()
end

--- Starts the watchers of every account (replacing those it had).
---@param lib himalaya.sync.NativeLib
---@return integer started accounts watched
---@return string? err why there was no account to watch
local function start_watchers(lib)
  local native = require('himalaya.sync.native')
  local cfg = config.get()
  local started = 0
  S.stopped = {}
  local names, err = accounts()
  if #names == 0 then
    return 0, err or 'the mbsyncrc has no channel or group'
  end
  for _, account in ipairs(names) do
    local n, e = lib.idle_start(account, cfg.idle.folders, cfg.idle.reidle)
    if n then
      started = started + 1
      -- The folders this account leaves out (its other folders are watched).
      ---@cast e string[]
      for _, why in ipairs(e) do
        native.problem('IDLE', ('%s: %s'):format(account, why))
      end
    else
      ---@cast e -?
      native.problem('IDLE', ('cannot watch %s: %s'):format(account, e.message))
    end
  end
  return started
end

--- A reason the last try did not watch, remembered for describe().
---@param why string
---@return false
local function not_watching(why)
  S.why_not = why
  S.warned_now = require('himalaya.sync.native').problem('IDLE', why)
  return false
end

--- Becomes the watching Neovim if none is, and starts the watchers.
---@return boolean watching
function M.try()
  if S.watching then
    return true
  end
  S.why_not = nil
  local native = require('himalaya.sync.native')
  local lib, err = require('himalaya.sync.manager')._ready()
  if not lib then
    return not_watching('cannot start: ' .. tostring(err))
  end
  -- Handled by the module as loaded now (a plugin reloader's new copy).
  native.own('himalaya.sync.idle', { 'idle_stopped' }, function(ev)
    require('himalaya.sync.idle')._on_stopped(ev.data)
  end)
  local got, lerr, kind = require('himalaya.sync.lock').acquire_lock(LOCK, 0)
  if got ~= true then
    -- Locked: another Neovim watches.
    if kind ~= 'locked' then
      return not_watching('cannot start: ' .. tostring(lerr))
    end
    return false
  end
  local started, why = start_watchers(lib)
  if started == 0 then
    -- Holding the lock without a watcher would keep every other Neovim
    -- from watching; the timer tries again.
    require('himalaya.sync.lock')._release(LOCK)
    return not_watching(('no account could be watched%s; trying again later'):format(why and (': ' .. why) or ''))
  end
  S.watching = true
  return true
end

--- Tries at once, for `:HimalayaSync idle on`, so that its answer says who
--- watches. The timer's next try then comes a whole interval later: the
--- one it may have queued for now would only repeat this one (and its
--- line in the log).
---@return boolean watching
---@return boolean warned a warning has just told why not
function M.try_now()
  S.warned_now = false
  local watching = M.try()
  if S.timer then
    S.timer:again()
  end
  return watching, S.warned_now
end

--- Starts again the watchers that stopped for good while others still
--- watch (the user fixed the cause: `:HimalayaSync idle on`). The timer
--- never does this: a wrong password would be tried every 30 s.
---@return boolean restarted
function M.restart_stopped()
  if not S.watching or next(S.stopped) == nil then
    return false
  end
  local lib = require('himalaya.sync.native').get()
  return lib ~= nil and start_watchers(lib) > 0
end

--- A watcher stopped for good (the engine's `idle_stopped` event): the
--- user hears why; with no folder left, IDLE turns off.
---@param data {watcher: integer, account: string, folder: string, kind: string, message: string} folder: as shown, `work: INBOX` when the account watches several IMAP accounts
function M._on_stopped(data)
  if not S.watching then
    return
  end
  -- A report still on its way when IDLE was turned off and on again, or
  -- the account's watchers were replaced, speaks of a watcher that is gone:
  -- the folder's new watcher must not pay for it.
  local watched = M.list()
  local current = vim.tbl_contains(watched, function(w)
    return w.watcher == data.watcher
  end, { predicate = true })
  if not current then
    return
  end
  S.stopped[data.watcher] = true
  local what = ('stopped watching %s %s: %s'):format(data.account, data.folder, data.message)
  local native = require('himalaya.sync.native')
  for _, w in ipairs(watched) do
    -- The event may come before the engine counts its watcher as ended.
    if w.running and not S.stopped[w.watcher] then
      native.problem('IDLE', what .. ' (other folders are still watched)')
      return
    end
  end
  M.stop()
  S.gave_up = what
  native.problem('IDLE', what .. '; nothing left to watch, so IDLE is off: fix that, then :HimalayaSync idle on', true)
end

--- Starts watching (or waiting for the current watcher's Neovim to exit).
function M.start()
  -- From a libuv callback: on the main loop, which the autocommand (and
  -- the configuration) need.
  if
    vim.in_fast_event() --[[@as boolean]]
  then
    return vim.schedule(M.start)
  end
  if S.timer then
    return
  end
  S.gave_up = nil
  local timer = assert(uv.new_timer())
  S.timer = timer
  -- Tries run the module as loaded now (a plugin reloader's new copy). A
  -- try queued before stop() must not start watching again: it runs only
  -- while its timer is still the one running.
  timer:start(
    0,
    M.RETRY_MS,
    vim.schedule_wrap(function()
      if S.timer == timer then
        require('himalaya.sync.idle').try()
      end
    end)
  )
  vim.api.nvim_create_autocmd('VimLeavePre', {
    group = vim.api.nvim_create_augroup('himalaya_sync_idle', { clear = true }),
    callback = function()
      M.stop()
    end,
  })
end

--- Stops the watchers and gives the lock up.
function M.stop()
  if S.timer then
    S.timer:stop()
    S.timer:close()
    S.timer = nil
  end
  if S.watching then
    local lib = require('himalaya.sync.native').get()
    if lib then
      lib.idle_stop()
    end
    require('himalaya.sync.lock')._release(LOCK)
    S.watching = false
  end
  S.stopped = {}
end

--- True while IDLE is on in this Neovim (watching, or ready to take over).
---@return boolean
function M.is_enabled()
  return S.timer ~= nil
end

--- One line on the state of IDLE in this Neovim, for `:HimalayaSync idle`.
---@return string
function M.describe()
  if not S.timer then
    return 'IDLE is off' .. (S.gave_up and (' (' .. S.gave_up .. ')') or '')
  end
  if not S.watching then
    return S.why_not and ('IDLE is on but not watching: %s'):format(S.why_not)
      or 'IDLE is on; another Neovim watches (this one takes over when it exits)'
  end
  local parts = {}
  for _, w in ipairs(M.list()) do
    local state = (not w.running or S.stopped[w.watcher]) and 'stopped' or (w.idle and 'idle' or 'connecting')
    local folder = w.imap_account and (w.imap_account .. ': ' .. w.folder) or w.folder
    parts[#parts + 1] = ('%s %s (%s)'):format(w.account, folder, state)
  end
  return 'IDLE is on, watching ' .. table.concat(parts, ', ')
end

--- True when this Neovim runs the watchers.
---@return boolean
function M.is_watching()
  return S.watching
end

---@class himalaya.sync.IdleWatch
---@field account string
---@field folder string
---@field imap_account? string the mbsyncrc's IMAPAccount it watches, when the account's channels log in to several (a Group of accounts: each has an INBOX)
---@field watcher integer the watcher's serial number in this Neovim
---@field running boolean the watcher runs (it reconnects after errors)
---@field idle boolean whether it is in IDLE now

--- The folders this Neovim watches.
---@return himalaya.sync.IdleWatch[]
function M.list()
  if not S.watching then
    return {}
  end
  local lib = require('himalaya.sync.native').get()
  return lib and lib.idle_list() or {}
end

return M
