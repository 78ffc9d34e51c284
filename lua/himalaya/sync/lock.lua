--- Named cross-process locks (`require('himalaya.sync.lock')`).
---
--- A lock is a flock(2) on a file in a per-user folder, so exactly one holder
--- exists among this Neovim, other Neovims and plain processes, and a lock
--- whose holder died is free at once. Failures return `false, message, kind`
--- (kind is `locked`, `invalid`, `config`, `io` or `cancelled`).
local native = require('himalaya.sync.native')
local config = require('himalaya.sync.config')

local M = {}

--- How often a blocking wait tries the lock again, in ms (the library's
--- own blocking wait notices a release as fast).
local RETRY_MS = 25

---@class himalaya.sync.LockInfo
---@field name string
---@field held boolean
---@field pid? integer holder's process id
---@field process? string holder's process name
---@field since? integer unix time the lock was taken
---@field purpose? string what the holder said it is for
---@field mine boolean held by this Neovim

local opened_for
--- The configuration the open folder was last compared with, and the
--- folder it asked for (nil: the default).
---@type table?, string?
local seen_cfg, asked_dir

--- A configuration that names another lock folder than the open one is
--- told once: the folder cannot change while locks may be held in it.
--- Called by the manager with the configuration it starts a sync with
--- (the lock functions themselves do not read the configuration again:
--- they stay a few microseconds).
---@param lib himalaya.sync.NativeLib
---@param cfg himalaya.sync.Config
function M._check_moved(lib, cfg)
  if cfg == seen_cfg or opened_for ~= lib then
    return
  end
  seen_cfg = cfg
  local want = cfg.lock_dir and vim.fs.normalize(cfg.lock_dir) or nil
  if want == asked_dir then
    return
  end
  local msg
  if want then
    local _, e = lib.lock_open(want)
    msg = e and e.message
  else
    msg = ('the lock folder is already %s; restart Neovim to use the default one'):format(lib.lock_open(nil))
  end
  asked_dir = want
  if msg then
    native.notify(msg .. ' (lock_dir changed after the first lock or sync)', vim.log.levels.WARN)
  end
end

--- The library with the lock folder opened (once, with the configured path).
---@return himalaya.sync.NativeLib? lib
---@return string? err
---@return string? kind
local function ready()
  -- In a fast event (a libuv callback) the library and its lock folder
  -- work once a call from the main loop has loaded and opened them:
  -- loading and reading the configuration need the main loop.
  if
    vim.in_fast_event() --[[@as boolean]]
  then
    local lib = native.is_loaded() and native.get() or nil
    if lib and opened_for == lib then
      return lib
    end
    return nil,
      'himalaya-sync cannot start in a fast event (a libuv callback): call a lock function from the main loop first, or call it from vim.schedule()',
      'invalid'
  end
  local lib, err = native.get()
  if not lib then
    return nil, err, 'config'
  end
  -- The folder is opened once per loaded library (it cannot change later).
  if opened_for == lib then
    return lib
  end
  local ok, e = pcall(config.get)
  if not ok then
    return nil, e, 'config'
  end
  -- `~` and `$VAR` only: expand() would also run a command in backticks.
  asked_dir = e.lock_dir and vim.fs.normalize(e.lock_dir) or nil
  local dir, derr = lib.lock_open(asked_dir)
  if not dir then
    ---@cast derr -?
    return nil, derr.message, derr.kind
  end
  opened_for, seen_cfg = lib, e
  return lib
end
M._ready = ready

local function check_args(name, timeout)
  if type(name) ~= 'string' then
    return ('invalid lock name: expected a string, got %s'):format(type(name))
  end
  if timeout ~= nil and (type(timeout) ~= 'number' or not (timeout >= 0 and timeout <= config.MAX_SECONDS)) then
    return ('invalid lock timeout %s: expected seconds from 0 to %d'):format(native.shown(timeout), config.MAX_SECONDS)
  end
end

--- The blocking form of acquire_lock: the lock is tried at once, then
--- again every RETRY_MS inside vim.wait until the timeout, so that the
--- editor keeps drawing and CTRL-C ends the wait. Nothing waits in the
--- background, so an ended wait leaves nothing to clean up.
---@param lib himalaya.sync.NativeLib
---@param name string
---@param timeout number
---@return boolean ok
---@return string? err
---@return string? kind
local function acquire_blocking(lib, name, timeout)
  local purpose = 'neovim ' .. vim.fn.getpid()
  -- vim.wait cannot run in a luv callback: there the library waits on this
  -- thread, as the blocking form always did (nothing reads CTRL-C there).
  -- (Neovim's types leave out what in_fast_event returns.)
  local fast = vim.in_fast_event() --[[@as boolean]]
  local ok, e = lib.lock_acquire(name, fast and timeout or 0, purpose)
  -- Held by this Neovim: only Neovim itself could release it, so it fails
  -- at once (the library's message says so) instead of waiting.
  if ok or not e or e.kind ~= 'locked' or fast or timeout == 0 or vim.tbl_contains(lib.lock_held() or {}, name) then
    return ok == true, e and e.message, e and e.kind
  end
  local done, why = vim.wait(math.ceil(timeout * 1000), function()
    ok, e = lib.lock_acquire(name, 0, purpose)
    return ok == true or not e or e.kind ~= 'locked'
  end, RETRY_MS)
  if done then
    return ok == true, e and e.message, e and e.kind
  elseif why == -2 then
    return false, ('waiting for lock %q was cancelled (CTRL-C)'):format(name), 'cancelled'
  end
  ---@cast e -?
  return false, ('%s; gave up after %g s'):format(e.message, timeout), 'locked'
end

--- Takes the lock `name`.
---
--- Without `callback` the call waits up to `timeout` seconds (0, the
--- default, tries once), processing events meanwhile; CTRL-C ends the wait
--- with kind `cancelled`. With `callback` it returns at once and calls
--- `callback(ok, err, kind)` on the main loop when the lock is taken or the
--- wait ends.
---@param name string
---@param timeout? number seconds to wait (default 0)
---@param callback? fun(ok: boolean, err?: string, kind?: string)
---@return boolean ok with a callback: the request was accepted
---@return string? err
---@return string? kind
function M.acquire_lock(name, timeout, callback)
  local bad = check_args(name, timeout)
  if not bad and callback ~= nil and not vim.is_callable(callback) then
    bad = 'invalid callback: expected a function'
  end
  if bad then
    return native.fail(callback, false, bad, 'invalid')
  end
  local lib, err, kind = ready()
  if not lib then
    return native.fail(callback, false, err, kind)
  end
  if not callback then
    return acquire_blocking(lib, name, timeout or 0)
  end
  local id, e = lib.lock_acquire_async(name, timeout or 0, 'neovim ' .. vim.fn.getpid())
  if not id then
    ---@cast e -?
    return native.fail(callback, false, e.message, e.kind)
  end
  native.on_id(id, function(ev)
    native.off(id)
    if ev.data.ok then
      native.call_back(callback, true)
    else
      native.call_back(callback, false, ev.data.error.message, ev.data.error.kind)
    end
  end)
  return true
end

--- The locks this Neovim's auto-sync and IDLE take through this module:
--- while they hold one, `release_lock` refuses it, since a release would
--- let a second Neovim lead or watch beside this one.
---@type table<string, {module: string, holds: string, what: string, stop: string}>
local OWN = {
  ['auto-sync'] = {
    module = 'himalaya.sync.auto',
    holds = 'is_leader',
    what = 'auto-sync leadership',
    stop = ':HimalayaSync auto off',
  },
  ['idle-watch'] = {
    module = 'himalaya.sync.idle',
    holds = 'is_watching',
    what = 'IDLE watcher',
    stop = ':HimalayaSync idle off',
  },
}

--- Releases `name` without asking who in this Neovim took it (for the
--- modules in OWN, which give their own lock up).
---@param name string
---@return boolean released
---@return string? err
function M._release(name)
  local lib, err = ready()
  if not lib then
    return false, err
  end
  local ok, e = lib.lock_release(name)
  if ok == nil then
    ---@cast e -?
    return false, e.message
  end
  return ok
end

--- Releases a lock this Neovim holds. Returns false when it held no such
--- lock, or when the plugin itself holds it (auto-sync, IDLE).
---@param name string
---@return boolean released
---@return string? err
function M.release_lock(name)
  local bad = check_args(name)
  if bad then
    return false, bad
  end
  local own = OWN[name]
  -- (`package.loaded` is typed as an empty table: say what a module may be.)
  local holder = own and package.loaded[own.module] --[[@as table?]]
  if holder and holder[own.holds]() then
    return false, ("lock %s is held by this Neovim's %s; %s gives it up"):format(name, own.what, own.stop)
  end
  local released, err = M._release(name)
  if not released and not err then
    -- Held here, but not through this module: the engine holds it for a
    -- sync (its account lock) or a token refresh that runs now.
    local info = vim.tbl_filter(function(l)
      return l.name == name
    end, M.list_locks() or {})[1]
    if info and info.mine then
      return false,
        ('lock %s is held by a sync or token refresh of this Neovim; it is released when that ends (:HimalayaSync cancel)'):format(
          name
        )
    end
  end
  return released, err
end

--- Runs `fn` while holding `name`, releasing it afterwards even when `fn`
--- errors (the error is raised again). Returns `fn`'s results, or
--- `false, err, kind` when the lock could not be taken.
---
--- With `callback`, the wait does not block: `fn` runs on the main loop once
--- the lock is taken, and `callback(ok, ...)` receives `true` and `fn`'s
--- results, `false` and `fn`'s error, or `false, err, kind` when the lock
--- could not be taken.
---@param name string
---@param fn fun(...): ...
---@param timeout? number seconds to wait (default 0)
---@param callback? fun(ok: boolean, ...)
---@return any ...
function M.with_lock(name, fn, timeout, callback)
  if callback ~= nil and not vim.is_callable(callback) then
    return false, 'invalid callback: expected a function', 'invalid'
  end
  if not vim.is_callable(fn) then
    return native.fail(callback, false, 'invalid function: expected a callable', 'invalid')
  end
  local function run()
    local res = vim.F.pack_len(pcall(fn))
    M.release_lock(name)
    return res
  end
  if callback then
    return M.acquire_lock(name, timeout, function(ok, err, kind)
      if not ok then
        return callback(false, err, kind)
      end
      callback(vim.F.unpack_len(run()))
    end)
  end
  local ok, err, kind = M.acquire_lock(name, timeout)
  if not ok then
    return false, err, kind
  end
  local res = run()
  if not res[1] then
    error(res[2], 0)
  end
  return unpack(res, 2, res.n)
end

--- Every lock file in the lock folder, with its holder when held.
---@return himalaya.sync.LockInfo[] locks
---@return string? err
function M.list_locks()
  local lib, err = ready()
  if not lib then
    return {}, err
  end
  local list, e = lib.lock_list()
  if not list then
    ---@cast e -?
    return {}, e.message
  end
  return list
end

--- True when some process holds `name`.
---@param name string
---@return boolean
function M.is_locked(name)
  for _, l in ipairs(M.list_locks()) do
    if l.name == name then
      return l.held
    end
  end
  return false
end

--- Removes lock files nobody holds; returns how many were removed.
---@return integer removed
---@return string? err
function M.cleanup_stale_locks()
  local lib, err = ready()
  if not lib then
    return 0, err
  end
  local n, e = lib.lock_cleanup()
  if not n then
    ---@cast e -?
    return 0, e.message
  end
  return n
end

--- The lock folder in use.
---@return string? dir
---@return string? err
function M.lock_dir()
  local lib, err = ready()
  if not lib then
    return nil, err
  end
  local dir, e = lib.lock_open(nil)
  if not dir then
    ---@cast e -?
    return nil, e.message
  end
  return dir
end

-- Names kept from the original neotex plugin.
M.cleanup_locks = M.cleanup_stale_locks

--- Locks currently held by any process (original plugin's name).
---@return himalaya.sync.LockInfo[]
function M.get_active_locks()
  return vim.tbl_filter(function(l)
    return l.held
  end, M.list_locks())
end

return M
