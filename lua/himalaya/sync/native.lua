--- Finds, loads and version-checks the Rust library, and pumps its events.
---
--- Exactly one copy of the library is ever loaded in a Neovim (two copies
--- would mean two runtimes): a rock install on an absolute entry of
--- `package.cpath` wins, else `<plugin root>/target/release/libhimalaya_sync.so`.
--- A file build is copied into a private cache folder (write, then rename)
--- before loading, so a later `cargo build` never rewrites a file Neovim
--- has mapped, and a new build can be loaded without a restart while
--- nothing is running. Every file is loaded by its absolute path, never
--- through Lua's own search.
---
--- Events: Rust writes one byte to a pipe when events wait; a libuv S.poll
--- handle on that pipe drains at most `DRAIN_MAX` events per loop turn and
--- hands them to `vim.schedule`, so a flood never stalls the editor.
local uv = vim.uv

--- luv functions that types/luv.lua does not describe.
---@class himalaya.sync.UvMore
---@field getuid fun(): integer
---@field fs_lstat fun(path: string): uv.fs_stat.result?, string?, string?
---@field fs_chmod fun(path: string, mode: integer): boolean?, string?, string?
---@field random fun(len: integer): string?, string?, string?
local uvm = uv --[[@as himalaya.sync.UvMore]]

local M = {}

local EXPECTED_VERSION = require('himalaya.sync.version')
local MODULE = 'himalaya_sync'
--- The command-line tool `cargo build --release` builds next to the library.
local TOOL = 'himalaya-sync'
local DRAIN_MAX = 256

--- A failure from the library: its functions return `nil, LibError`.
---@class himalaya.sync.LibError
---@field kind string auth|network|timeout|locked|uidvalidity|config|cancelled|invalid|io|internal|unknown
---@field message string one line for the user

--- An event from the library, for the request `id` (see `M.on_id`).
---@class himalaya.sync.Event
---@field id integer
---@field name string
---@field data any

--- The library module (`src/lua/`). Every function returns its value(s) on
--- success and `nil, LibError` on failure.
---@class himalaya.sync.NativeLib
---@field version string
---@field build_id string
---@field events_fd fun(): integer?, himalaya.sync.LibError?
---@field drain_events fun(max: integer): string?, boolean|himalaya.sync.LibError a JSON array of events; more events wait (or the error)
---@field shutdown fun(timeout_ms?: integer): true?, himalaya.sync.LibError?
---@field is_stopped fun(): boolean?, himalaya.sync.LibError?
---@field emit_test_events fun(count: integer, name: string): integer?, himalaya.sync.LibError?
---@field now_us fun(): integer?, himalaya.sync.LibError?
---@field ids_after fun(n: integer)
---@field lock_open fun(dir?: string): string?, himalaya.sync.LibError?
---@field lock_acquire fun(name: string, timeout?: number, purpose?: string): true?, himalaya.sync.LibError?
---@field lock_acquire_async fun(name: string, timeout?: number, purpose?: string): integer?, himalaya.sync.LibError?
---@field lock_release fun(name: string): boolean?, himalaya.sync.LibError?
---@field lock_list fun(): himalaya.sync.LockInfo[]?, himalaya.sync.LibError?
---@field lock_cleanup fun(): integer?, himalaya.sync.LibError?
---@field lock_held fun(): string[]?, himalaya.sync.LibError?
---@field parse_progress_line fun(line: string): himalaya.sync.Progress?, himalaya.sync.LibError?
---@field manager_configure fun(settings: table): true?, himalaya.sync.LibError?
---@field sync_start fun(type: himalaya.sync.SyncType, account: string, folders?: string[], wait?: number): integer?, himalaya.sync.LibError?
---@field sync_check fun(account: string, folders?: string[]): integer?, himalaya.sync.LibError?
---@field sync_auth_refreshed fun(id: integer, ok: boolean, why?: string, kind?: string): true?, himalaya.sync.LibError?
---@field sync_cancel fun(id?: integer): integer?, himalaya.sync.LibError?
---@field sync_history fun(): table<string, himalaya.sync.History>?, himalaya.sync.LibError?
---@field log_open fun(path?: string): true?, himalaya.sync.LibError?
---@field log_write fun(level: string, message: string): true?, himalaya.sync.LibError?
---@field folder_counts fun(account: string): himalaya.sync.FolderCounts[]?, himalaya.sync.LibError?
---@field idle_start fun(account: string, folders: string[], reidle?: number): integer?, (string[]|himalaya.sync.LibError)
---@field idle_stop fun(account?: string): integer?, himalaya.sync.LibError?
---@field idle_list fun(): himalaya.sync.IdleWatch[]?, himalaya.sync.LibError?
---@field himalaya_accounts fun(path?: string): himalaya.sync.HimalayaConfig?, himalaya.sync.LibError?
---@field mbsync_targets fun(): himalaya.sync.Target[]?, himalaya.sync.LibError?
---@field mbsync_has_target fun(name: string): boolean?, himalaya.sync.LibError?
---@field mbsync_path fun(): string?, himalaya.sync.LibError?
---@field mbsync_passwordless fun(): string[]?, himalaya.sync.LibError?
---@field oauth_call fun(op: string, account: string, arg?: table|string): integer?, (himalaya.sync.LibError|number)? request id and answer limit (s), or nil and the error
---@field oauth_cancel_authorize fun(account?: string): integer, integer authorizations ended, and found finishing

-- State lives in the Lua registry, not in this module: a plugin reloader
-- that clears `package.loaded` must not lead to a second poll handle or a
-- second load of the library.
local REGISTRY_KEY = 'himalaya_sync.native'
local registry = debug.getregistry()
---@class himalaya.sync.NativeState
---@field lib? himalaya.sync.NativeLib
---@field source? string where the loaded library came from
---@field kind? 'env'|'rock'|'file' how it was found (see M.find)
---@field staged? string the staged copy actually loaded
---@field poll? uv.uv_poll_t
---@field stopped? boolean shut down (VimLeavePre): events are not watched again
---@field by_id table<integer, fun(ev: himalaya.sync.Event)?>
---@field by_name table<string, fun(ev: himalaya.sync.Event)[]>
---@field max_id? integer the highest event id seen (a reloaded library continues after it)
---@field owners? table<string, fun()[]> what each module subscribed with M.own (unsubscribers)
---@field states? table<string, table> each module's state (see M.state)
---@field warned? table<string, true?> problems shown already (see M.problem)
---@type himalaya.sync.NativeState
local S = registry[REGISTRY_KEY] or { by_id = {}, by_name = {} }
registry[REGISTRY_KEY] = S

local sysname = uv.os_uname().sysname
local ext = sysname == 'Darwin' and '.dylib' or '.so'

-- Level 1 is this chunk, which always exists: getinfo never returns nil.
local this_chunk = debug.getinfo(1, 'S')
---@cast this_chunk -?
--- The plugin's root folder (the one holding `lua/` and `Cargo.toml`).
M.root = vim.fn.fnamemodify(this_chunk.source:sub(2), ':p:h:h:h:h')
M.expected_version = EXPECTED_VERSION

--- Where a file build is expected.
---@return string
function M.build_path()
  return M.root .. '/target/release/lib' .. MODULE .. ext
end

--- How to get a working library, for error messages: it depends on where
--- the library comes from (`kind` of M.find(); default: a file build).
---@param kind? 'env'|'rock'|'file'
---@return string
function M.build_hint(kind)
  if kind == 'env' then
    return ("point $HIMALAYA_SYNC_LIB at a build of version %s, or unset it to use the plugin's own build"):format(
      EXPECTED_VERSION
    )
  elseif kind == 'rock' then
    return ('install version %s of the himalaya-sync.nvim rock with luarocks'):format(EXPECTED_VERSION)
  end
  return ('run :HimalayaSync build, or `cargo build --release` in %s'):format(M.root)
end

---@class himalaya.sync.LibLocation
---@field kind 'env'|'rock'|'file'
---@field path string

--- A rock install: the module on an absolute entry of `package.cpath`.
--- Relative entries are skipped: Neovim's cpath starts with `./?.so`, and a
--- `himalaya_sync.so` in whatever folder Neovim was started in must not run.
---@return string? path
local function find_rock()
  local absolute = vim.tbl_filter(function(template)
    return vim.startswith(template, '/')
  end, vim.split(package.cpath, ';', { plain = true, trimempty = true }))
  return (package.searchpath(MODULE, table.concat(absolute, ';')))
end

--- Locates the library without loading it.
---@return himalaya.sync.LibLocation? location
---@return string? err
function M.find()
  local env = os.getenv('HIMALAYA_SYNC_LIB')
  if env and env ~= '' then
    if uv.fs_stat(env) then
      return { kind = 'env', path = env }
    end
    return nil, ('HIMALAYA_SYNC_LIB points at %s, which does not exist'):format(env)
  end
  local rock = find_rock()
  if rock then
    return { kind = 'rock', path = rock }
  end
  local file = M.build_path()
  if uv.fs_stat(file) then
    return { kind = 'file', path = file }
  end
  return nil,
    ('himalaya-sync: native library not found (looked for %s and %q on the absolute entries of package.cpath); %s'):format(
      file,
      MODULE,
      M.build_hint()
    )
end

--- Where the `himalaya-sync` program built with the library in use (the
--- loaded one, else the one M.find finds) would be: in the tree's `bin`
--- folder for a rock (which keeps the library in `<tree>/lib/lua/5.1/`),
--- else next to the library (a file build, $HIMALAYA_SYNC_LIB).
---@return string? path
function M.own_tool_path()
  local loc = S.source and { kind = S.kind, path = S.source } or M.find()
  if not loc then
    return nil
  end
  local path = vim.fn.fnamemodify(loc.path, ':p')
  local tree = loc.kind == 'rock' and path:match('^(.*)/lib/lua/[^/]+/[^/]+$')
  return (tree and tree .. '/bin' or vim.fn.fnamemodify(path, ':h')) .. '/' .. TOOL
end

--- The `himalaya-sync` program: the one built with the library in use (see
--- M.own_tool_path), else the one on $PATH. The engine runs it as the relay
--- of throttled accounts.
---@return string? path
function M.tool_path()
  local own = M.own_tool_path()
  if own and vim.fn.executable(own) == 1 then
    return own
  end
  local on_path = vim.fn.exepath(TOOL)
  return on_path ~= '' and on_path or nil
end

--- Creates `dir` and its missing parents (mode 0700). Several Neovims may
--- start at once and create the same folders: a folder made by another one
--- a moment earlier, at any level, is fine. (mkdir(..., 'p') fails then,
--- with E739, and leaves the deeper levels uncreated.)
---@param dir string
---@return boolean ok
---@return string? err
local function make_folder(dir)
  if vim.fn.isdirectory(dir) == 1 then
    return true
  end
  local parent = vim.fs.dirname(dir)
  if parent ~= dir then
    local ok, err = make_folder(parent)
    if not ok then
      return false, err
    end
  end
  local _, err = uv.fs_mkdir(dir, 448) -- mode 0700: this user only
  if vim.fn.isdirectory(dir) == 0 then
    return false, err or 'not a folder'
  end
  return true
end

--- Mode bits for access by the group and by others (0077).
local GROUP_OTHER = 63
--- Mode bits for writing by the group and by others (0022).
local GROUP_OTHER_WRITE = 18

--- Creates the staging folder `dir` if missing, and checks that only this
--- user can put files into it: whoever can would choose the code Neovim
--- runs. Refused: a symbolic link, not a folder, another owner, any access
--- for the group or others.
---@param dir string
---@return boolean ok
---@return string? err one line naming the folder and the fix
local function private_folder(dir)
  local fix = ('remove it (rm -r %s) and it is created again, private to you'):format(vim.fn.shellescape(dir))
  local made, merr = make_folder(dir)
  local st = uvm.fs_lstat(dir)
  if not made then
    local in_way = st and (st.type == 'link' and 'symbolic link' or st.type)
    return false,
      in_way and ('cannot create the folder %s: a %s is in the way; %s'):format(dir, in_way, fix)
        or ('cannot create the folder %s: %s'):format(dir, merr)
  end
  local uid = uvm.getuid()
  local why
  if not st then
    why = 'it disappeared'
  elseif st.type == 'link' then
    why = 'it is a symbolic link'
  elseif st.type ~= 'directory' then
    why = 'it is not a folder'
  elseif st.uid ~= uid then
    why = ('it belongs to user id %d, not to you (%d)'):format(st.uid, uid)
  elseif bit.band(st.mode, GROUP_OTHER) ~= 0 then
    why = ('other users have access to it (mode %o)'):format(bit.band(st.mode, 511))
  end
  if why then
    return false, ('refusing to load the library from %s: %s; %s'):format(dir, why, fix)
  end
  return true
end

--- Whether `path` is a copy staged by this user of a library of `size`
--- bytes: a regular file (lstat: a symbolic link is never followed), owned
--- by this user, writable by nobody else, of the same size. (The folder is
--- private, so the content is not compared as well.)
---@param path string
---@param size integer
---@return boolean
local function is_staged_copy(path, size)
  local st = uvm.fs_lstat(path)
  return st ~= nil
    and st.type == 'file'
    and st.uid == uvm.getuid()
    and bit.band(st.mode, GROUP_OTHER_WRITE) == 0
    and st.size == size
end

--- Copies a file build into the private cache folder under a name unique to
--- its size and mtime, reusing a copy there that passes is_staged_copy.
--- The copy goes to a random temp name, created exclusively (never through
--- a symlink planted there), then is renamed over whatever is in the way
--- (rename replaces a symlink itself, not its target): readers never see
--- half a file.
---@param path string
---@return string? staged
---@return string? err
local function stage(path)
  local st = uv.fs_stat(path)
  if not st then
    return nil, 'cannot stat ' .. path
  end
  local dir = vim.fn.stdpath('cache') .. '/himalaya-sync'
  local private, perr = private_folder(dir)
  if not private then
    return nil, perr
  end
  local name = ('lib%s-%d-%d.%d%s'):format(MODULE, st.size, st.mtime.sec, st.mtime.nsec, ext)
  local dest = dir .. '/' .. name
  if not is_staged_copy(dest, st.size) then
    local rand, rerr = uvm.random(8)
    if not rand then
      return nil, 'cannot name a temp file: ' .. tostring(rerr)
    end
    local tmp = ('%s.tmp.%d.%s'):format(dest, uv.os_getpid(), (rand:gsub('.', function(c)
      return ('%02x'):format(c:byte())
    end)))
    local ok, err = uv.fs_copyfile(path, tmp, { excl = true })
    if not ok then
      return nil, ('cannot copy %s to %s: %s'):format(path, tmp, err)
    end
    -- Private whatever the build's mode (a umask of 002 leaves it
    -- group-writable).
    uvm.fs_chmod(tmp, 448)
    ok, err = uv.fs_rename(tmp, dest)
    if not ok then
      uv.fs_unlink(tmp)
      return nil, ('cannot rename %s: %s'):format(tmp, err)
    end
  end
  -- Checked again right before loading: what is loaded is what was checked.
  if not is_staged_copy(dest, st.size) then
    return nil, ('the staged copy %s is not a private file of %d bytes; remove it'):format(dest, st.size)
  end
  -- Older staged builds are no longer needed; a Neovim that still has one
  -- mapped keeps its mapping after the unlink. Copies in progress (.tmp.)
  -- belong to other Neovims starting up.
  for entry in vim.fs.dir(dir) do
    if entry ~= name and entry:match('^lib' .. MODULE .. '%-') and not entry:find('.tmp.', 1, true) then
      uv.fs_unlink(dir .. '/' .. entry)
    end
  end
  return dest
end

---@param loc himalaya.sync.LibLocation
---@param current? string staged path of the library in use
---@return himalaya.sync.NativeLib? lib
---@return string? err
---@return string? staged path loaded (nil for a rock)
local function open(loc, current)
  local file, staged = loc.path, nil
  if loc.kind ~= 'rock' then
    local serr
    staged, serr = stage(loc.path)
    if not staged then
      return nil, 'himalaya-sync: ' .. serr
    end
    if staged == current then
      return nil, nil, staged
    end
    file = staged
  end
  -- By its absolute path: `require` would search package.cpath again and
  -- could find another file first.
  local loaded, err
  local loader, lerr = package.loadlib(file, 'luaopen_' .. MODULE)
  if loader then
    local ok, mod = pcall(loader)
    loaded, err = ok and mod or nil, not ok and tostring(mod) or nil
  else
    err = lerr
  end
  if not loaded then
    return nil, ('himalaya-sync: cannot load %s: %s; %s'):format(loc.path, err, M.build_hint(loc.kind))
  end
  if loaded.version ~= EXPECTED_VERSION then
    return nil,
      ('himalaya-sync: library %s is version %s but the plugin expects %s; %s'):format(
        loc.path,
        tostring(loaded.version),
        EXPECTED_VERSION,
        M.build_hint(loc.kind)
      )
  end
  -- A library of the expected version is the module described above.
  ---@cast loaded himalaya.sync.NativeLib
  return loaded, nil, staged
end

-- The library leaves out absent fields; `null` never reaches a handler.
local JSON_OPTS = { luanil = { object = true, array = true } }

---@param text string a JSON array of events from drain_events
local function dispatch(text)
  ---@type himalaya.sync.Event[]
  local events = vim.json.decode(text, JSON_OPTS)
  for _, ev in ipairs(events) do
    if ev.id > (S.max_id or 0) then
      S.max_id = ev.id
    end
    local fns = {}
    if S.by_id[ev.id] then
      fns[1] = S.by_id[ev.id]
    end
    for _, fn in ipairs(S.by_name[ev.name] or {}) do
      fns[#fns + 1] = fn
    end
    for _, fn in ipairs(fns) do
      local ok, err = pcall(fn, ev)
      if not ok then
        vim.notify(('himalaya-sync: error in %s handler: %s'):format(ev.name, err), vim.log.levels.ERROR)
      end
    end
  end
end

--- Takes one capped batch; schedules another turn while a backlog remains.
local function drain()
  if not S.lib then
    return
  end
  local text, more = S.lib.drain_events(DRAIN_MAX)
  if not text then
    return
  end
  if text ~= '[]' then
    vim.schedule(function()
      dispatch(text)
    end)
  end
  if more then
    vim.schedule(drain)
  end
end

--- Watches the library's event pipe; false and one line when it cannot.
---@param lib himalaya.sync.NativeLib the library just loaded
---@return boolean ok
---@return string? err
local function start_pump(lib)
  local fd, ferr = lib.events_fd()
  local poll, perr
  if fd then
    poll, perr = uv.new_poll(fd)
  end
  if not poll then
    return false, 'himalaya-sync: cannot receive events from the library: ' .. (ferr and ferr.message or tostring(perr))
  end
  S.poll = poll
  S.poll:start('r', function(err)
    if not err then
      drain()
    end
  end)
  vim.api.nvim_create_autocmd('VimLeavePre', {
    group = vim.api.nvim_create_augroup('himalaya_sync_native', { clear = true }),
    desc = 'himalaya-sync: stop syncs and child processes',
    callback = function()
      M.shutdown()
    end,
  })
  return true
end

local function stop_pump()
  if S.poll then
    S.poll:stop()
    S.poll:close()
    S.poll = nil
  end
end

--- The loaded library, loading it on first use.
---@return himalaya.sync.NativeLib? lib
---@return string? err one line saying what is wrong and how to fix it
function M.get()
  if S.lib then
    -- Loaded but deaf (its event pipe could not be watched at load or
    -- reload): nothing may start until events can arrive, or it would
    -- never be seen to end.
    if not S.poll and not S.stopped then
      local pumping, perr = start_pump(S.lib)
      if not pumping then
        return nil, perr
      end
    end
    return S.lib
  end
  -- Finding, staging and loading it call Vimscript functions, which a
  -- fast event (a libuv callback) may not (E5560).
  if
    vim.in_fast_event() --[[@as boolean]]
  then
    return nil,
      'the library is not loaded yet, and is not loaded in a fast event (a libuv callback): '
        .. 'use the plugin from the main loop first (vim.schedule)'
  end
  local loc, err = M.find()
  if not loc then
    return nil, err
  end
  local loaded, lerr, staged = open(loc)
  if not loaded then
    return nil, lerr
  end
  -- Kept even when its events cannot be watched yet: the library is
  -- initialised once, and the next call tries the watch again.
  S.lib, S.source, S.kind, S.staged = loaded, loc.path, loc.kind, staged
  local pumping, perr = start_pump(loaded)
  if not pumping then
    return nil, perr
  end
  return S.lib
end

--- True once the library is loaded (never loads it).
---@return boolean
function M.is_loaded()
  return S.lib ~= nil
end

--- Writes one line to the engine's log (|himalaya-sync-files|), loading
--- the library if needed; does nothing when it cannot be loaded.
---@param level 'info'|'warn'|'error'
---@param msg string
function M.log(level, msg)
  local lib = M.get()
  if lib then
    lib.log_write(level, msg)
  end
end

--- Path of the loaded library, if any.
---@return string?
function M.source()
  return S.source
end

--- Calls `fn` with the event answering request `id` (repeatedly, until `M.off(id)`).
---@param id integer
---@param fn fun(ev: {id: integer, name: string, data: any})
function M.on_id(id, fn)
  S.by_id[id] = fn
end

---@param id integer
function M.off(id)
  S.by_id[id] = nil
end

--- Subscribes to every event named `name`; returns a function that unsubscribes.
---@param name string
---@param fn fun(ev: {id: integer, name: string, data: any})
---@return fun()
function M.on(name, fn)
  local list = S.by_name[name] or {}
  S.by_name[name] = list
  list[#list + 1] = fn
  return function()
    for i, f in ipairs(list) do
      if f == fn then
        table.remove(list, i)
        return
      end
    end
  end
end

--- Subscribes `fn` to the events `names` on behalf of `owner` (a module
--- name), dropping what `owner` subscribed before: a module loaded again by
--- a plugin reloader takes over from its old copy instead of adding to it.
---@param owner string
---@param names string[]
---@param fn fun(ev: himalaya.sync.Event)
function M.own(owner, names, fn)
  S.owners = S.owners or {}
  for _, off in ipairs(S.owners[owner] or {}) do
    off()
  end
  local offs = {}
  for _, name in ipairs(names) do
    offs[#offs + 1] = M.on(name, fn)
  end
  S.owners[owner] = offs
end

--- `msg` without the plugin's prefix, which errors of the loader and the
--- configuration carry, for a text that says it once itself.
---@param msg any
---@return string
function M.bare(msg)
  return (tostring(msg):gsub('^himalaya%-sync: ', ''))
end

--- Shows `msg` as a notification with the plugin's prefix, once.
---@param msg any
---@param level? integer vim.log.levels (default INFO)
function M.notify(msg, level)
  vim.notify('himalaya-sync: ' .. M.bare(msg), level or vim.log.levels.INFO)
end

--- A problem that keeps a background job (auto-sync, IDLE) from working:
--- logged at every occurrence, shown once per message as a warning unless
--- notifications are off (and also when the configuration cannot be read,
--- since that may be the problem).
---@param job string 'auto-sync' or 'IDLE'
---@param msg string
---@param again? boolean shown even if shown before (it ends the job)
---@return boolean shown whether it was shown now
function M.problem(job, msg, again)
  local text = job .. ': ' .. M.bare(msg)
  M.log('warn', text)
  S.warned = S.warned or {}
  local ok, cfg = pcall(require('himalaya.sync.config').get)
  if (again or not S.warned[text]) and (not ok or cfg.notify.enabled) then
    S.warned[text] = true
    M.notify(text, vim.log.levels.WARN)
    return true
  end
  return false
end

--- Longest text of a bad value quoted in an error message, in bytes.
local SHOWN = 200

--- `s` cut to SHOWN bytes, on a character boundary, marked with `...`.
---@param s string
---@return string
function M.cut(s)
  if #s <= SHOWN then
    return s
  end
  return s:sub(1, SHOWN + vim.str_utf_start(s, SHOWN + 1)) .. '...'
end

--- A bad value for an error message: as `vim.inspect` writes it (one line,
--- quoted and escaped), cut short when long, so that one absurd argument
--- cannot flood every notification and log line that shows the error.
---@param v any
---@return string
function M.shown(v)
  -- What a Vimscript v:null (or a Funcref, which arrives the same) is there.
  if v == vim.NIL then
    return 'v:null'
  end
  -- Only the start of a long string can be shown: inspect no more of it.
  -- On one line: a table is shown as `{ a = 1, b = { 2 } }`.
  return M.cut(vim.inspect(type(v) == 'string' and v:sub(1, 4 * SHOWN) or v, { newline = ' ', indent = '' }))
end

---@class himalaya.sync.KnownKeys
---@field set table<any, true?>
---@field names string sorted, for messages

--- The keys a table from a caller may have: a misspelt one is an error, not
--- a field silently left out (`acount` would sync the default account).
---@param names string[]
---@return himalaya.sync.KnownKeys
function M.known_keys(names)
  local set = {}
  for _, k in ipairs(names) do
    set[k] = true
  end
  local sorted = vim.list_extend({}, names)
  table.sort(sorted)
  return { set = set, names = table.concat(sorted, ', ') }
end

--- The error for the first key of `t` that is not `known`, if any.
---@param t table
---@param known himalaya.sync.KnownKeys
---@param what string the table as the message names it: options, progress.near
---@param noun 'option'|'field'
---@return string?
function M.unknown_key(t, known, what, noun)
  for k in pairs(t) do
    if not known.set[k] then
      return ('invalid %s.%s: unknown %s (known: %s)'):format(what, M.cut(tostring(k)), noun, known.names)
    end
  end
end

--- Answers a call that failed before it could start: returns the failure,
--- and hands it to `callback` too when that is callable (later, on the main
--- loop, never before the call returns), since a callback gets every answer.
--- `first` is what the module returns first on failure (false for locks,
--- nil elsewhere).
---@generic T
---@param callback any
---@param first T
---@param msg? string
---@param kind? string
---@return T
---@return string? msg
---@return string? kind
function M.fail(callback, first, msg, kind)
  if vim.is_callable(callback) then
    vim.schedule(function()
      M.call_back(callback, first, msg, kind)
    end)
  end
  return first, msg, kind
end

--- Calls a user's callback: an error in it is shown as one notification,
--- not raised into the event loop (a traceback) or into the plugin's code.
---@param fn function
---@param ... any its arguments
---@return boolean ok false when it raised an error
function M.call_back(fn, ...)
  local ok, err = pcall(fn, ...)
  if not ok then
    vim.notify('himalaya-sync: error in a callback: ' .. tostring(err), vim.log.levels.ERROR)
  end
  return ok
end

--- The state of the module `owner`, kept in the Lua registry like this
--- module's own: a module loaded again by a plugin reloader finds its
--- timers, running syncs and callbacks where its old copy left them,
--- instead of starting a second timer or forgetting who waits for what.
--- Fields missing from the state are set from `defaults`.
---@generic T: table
---@param owner string
---@param defaults T
---@return T
function M.state(owner, defaults)
  S.states = S.states or {}
  local state = S.states[owner] or {}
  S.states[owner] = state
  for k, v in pairs(defaults) do
    if state[k] == nil then
      state[k] = v
    end
  end
  return state
end

--- Stops event delivery, kills every child process group, stops the runtime
--- (bounded: 200 ms by default). Called on VimLeavePre.
---@param timeout_ms? integer
function M.shutdown(timeout_ms)
  if not S.lib then
    return
  end
  S.stopped = true
  stop_pump()
  S.lib.shutdown(timeout_ms or 200)
end

--- Loads a freshly built library in place of the running one, if that is safe
--- (nothing running, no lock held). Returns true when the new build is in use.
---@param is_busy? fun(): boolean extra check (the manager's running syncs)
---@return boolean ok
---@return string? msg
function M.reload(is_busy)
  if not S.lib then
    local ok, err = M.get()
    return ok ~= nil, err
  end
  local loc, err = M.find()
  if not loc then
    return false, err
  end
  if loc.kind == 'rock' then
    return false, 'the library is a rock install; restart Neovim to use a new version'
  end
  -- Auto-sync leadership is the only lock that may be held across a
  -- reload: it is released here and taken again by the new build.
  local held = vim.tbl_filter(function(n)
    return n ~= 'auto-sync'
  end, S.lib.lock_held() or {})
  -- A request still waiting for its answer (an async lock wait, an OAuth
  -- authorization) would never hear it from the new build.
  if #held > 0 or next(S.by_id) ~= nil or (is_busy and is_busy()) then
    return false, 'syncs, locks or requests are active; the new build is used after a restart of Neovim'
  end
  local old, old_source = S.lib, S.source
  local fresh, lerr, staged = open(loc, S.staged)
  if staged and staged == S.staged then
    return true, 'already using build ' .. old.build_id
  end
  if not fresh then
    return false, lerr
  end
  stop_pump()
  old.lock_release('auto-sync')
  -- (`package.loaded` is typed as an empty table: say what a module may be.)
  local auto = package.loaded['himalaya.sync.auto'] --[[@as table?]]
  if auto then
    auto._lost_leadership()
  end
  old.shutdown(100)
  fresh.ids_after(S.max_id or 0)
  S.lib, S.source, S.kind, S.staged = fresh, loc.path, loc.kind, staged
  local pumping, perr = start_pump(fresh)
  if not pumping then
    return false, perr
  end
  local manager = package.loaded['himalaya.sync.manager'] --[[@as table?]]
  if manager then
    manager._library_replaced()
  end
  return true, ('now using build %s (was %s from %s)'):format(fresh.build_id, old.build_id, old_source)
end

return M
