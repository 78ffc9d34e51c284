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
local uv = vim.uv or vim.loop

local M = {}

local LEADER_LOCK = 'auto-sync'

---@type uv.uv_timer_t?
local timer
local leader = false

local function log(msg)
  local lib = require('himalaya.sync.native').get()
  if lib then
    lib.log_write('info', 'auto-sync: ' .. msg)
  end
end

--- The accounts the timer syncs.
---@return string[]
local function accounts()
  local cfg = config.get()
  if cfg.auto_sync.accounts then
    return cfg.auto_sync.accounts
  end
  -- Every group, and every channel that no group syncs already.
  local targets = require('himalaya.sync.manager').list_targets() or {}
  local names = {}
  for _, t in ipairs(targets) do
    if t.kind == 'group' or not t.grouped then
      names[#names + 1] = t.name
    end
  end
  return names
end

--- One tick: become leader if nobody is, then sync what is due.
function M.tick()
  local lock = require('himalaya.sync.lock')
  if not leader then
    leader = lock.acquire_lock(LEADER_LOCK, 0) == true
    if leader then
      log(('this Neovim (pid %d) leads auto-sync'):format(vim.fn.getpid()))
    else
      return
    end
  end
  local cfg = config.get()
  local manager = require('himalaya.sync.manager')
  local history = manager.history() or {}
  local recent = cfg.auto_sync.interval * 60 / 2
  for _, account in ipairs(accounts()) do
    local h = history[account]
    if h and h.last_sync and os.time() - h.last_sync < recent then
      log(('skipped %s: synced %d s ago'):format(account, os.time() - h.last_sync))
    else
      local id, err = manager.start_sync(cfg.auto_sync.type, { account = account, auto = true })
      if not id then
        log(('could not start %s: %s'):format(account, err))
      end
    end
  end
end

--- Starts the timer (first tick after one interval).
function M.start()
  if timer then
    return
  end
  local ms = math.max(1, math.floor(config.get().auto_sync.interval * 60 * 1000))
  timer = assert(uv.new_timer())
  timer:start(ms, ms, vim.schedule_wrap(M.tick))
end

--- Stops the timer and gives up leadership.
function M.stop()
  if timer then
    timer:stop()
    timer:close()
    timer = nil
  end
  if leader then
    require('himalaya.sync.lock').release_lock(LEADER_LOCK)
    leader = false
    log('stopped; leadership released')
  end
end

--- Called when the library is replaced: the next tick competes again.
function M._lost_leadership()
  leader = false
end

---@return boolean
function M.is_enabled()
  return timer ~= nil
end

---@return boolean
function M.is_leader()
  return leader
end

--- Turns auto-sync on or off; returns the new state.
---@return boolean
function M.toggle()
  if timer then
    M.stop()
  else
    M.start()
  end
  return timer ~= nil
end

return M
