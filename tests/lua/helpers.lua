-- Minimal test framework and helpers for the Lua specs (see runner.lua).
local uv = vim.uv or vim.loop
local M = {}

local tests = {}
local load_errors = {}
local prefix = {}

--- Groups tests; names are joined with " > ".
function M.describe(name, fn)
  prefix[#prefix + 1] = name
  fn()
  prefix[#prefix] = nil
end

--- Declares a test.
function M.it(name, fn)
  local full = table.concat(vim.list_extend(vim.deepcopy(prefix), { name }), ' > ')
  tests[#tests + 1] = { name = full, fn = fn }
end

local cleanups = {}
--- Runs `fn` after the current test, pass or fail.
function M.defer(fn)
  cleanups[#cleanups + 1] = fn
end

--- `require('himalaya.sync').setup(opts)` for the rest of this test:
--- setup() options outlive a test unless reset, even when it fails.
---@param opts table
function M.setup_for_test(opts)
  M.defer(function()
    require('himalaya.sync').setup({})
  end)
  require('himalaya.sync').setup(opts)
end

function M.record_load_error(spec, err)
  load_errors[#load_errors + 1] = ('%s: %s'):format(spec, err)
end

--- The parts of HIMALAYA_SPEC_FILTER (separated by `|`, blanks around
--- them dropped): a test runs when its name holds one; all when none.
---@param filter string?
---@return string[]
function M.filter_parts(filter)
  local parts = vim.tbl_map(vim.trim, vim.split(filter or '', '|', { plain = true }))
  return vim.tbl_filter(function(part)
    return part ~= ''
  end, parts)
end

function M.run_all()
  local passed, failed = 0, #load_errors
  for _, e in ipairs(load_errors) do
    io.stdout:write('FAIL (load) ' .. e .. '\n')
  end
  local filter = M.filter_parts(os.getenv('HIMALAYA_SPEC_FILTER'))
  local chosen = function(name)
    return #filter == 0 or vim.iter(filter):any(function(part)
      return name:find(part, 1, true) ~= nil
    end)
  end
  for _, t in ipairs(tests) do
    if chosen(t.name) then
      local started = uv.hrtime()
      local ok, err = xpcall(t.fn, debug.traceback)
      for i = #cleanups, 1, -1 do
        pcall(cleanups[i])
      end
      cleanups = {}
      local ms = (uv.hrtime() - started) / 1e6
      if ok then
        passed = passed + 1
        io.stdout:write(('ok   %s (%.0f ms)\n'):format(t.name, ms))
      else
        failed = failed + 1
        io.stdout:write(('FAIL %s\n     %s\n'):format(t.name, tostring(err):gsub('\n', '\n     ')))
      end
      io.stdout:flush()
    end
  end
  return passed, failed
end

--- Asserts deep equality with a readable message.
function M.eq(expected, actual, msg)
  if not vim.deep_equal(expected, actual) then
    error(('%sexpected %s, got %s'):format(msg and (msg .. ': ') or '', vim.inspect(expected), vim.inspect(actual)), 2)
  end
end

--- Asserts `cond` is truthy.
function M.ok(cond, msg)
  if not cond then
    error(msg or 'assertion failed', 2)
  end
  return cond
end

--- Asserts `s` contains `needle` (plain text).
function M.contains(s, needle, msg)
  if type(s) ~= 'string' or not s:find(needle, 1, true) then
    error(('%sexpected %s to contain %q'):format(msg and (msg .. ': ') or '', vim.inspect(s), needle), 2)
  end
end

--- Waits (processing events) until `cond()` is truthy or fails after `ms`.
function M.wait_for(cond, ms, what)
  local ok = vim.wait(ms or 10000, cond, 10)
  if not ok then
    error('timed out waiting for ' .. (what or 'condition'), 2)
  end
end

local tmp_count = 0
--- A private temp folder removed after the test. It lives in the spec's
--- home, so the runner can stop what a killed spec left behind.
function M.tmpdir()
  tmp_count = tmp_count + 1
  local home = os.getenv('HIMALAYA_SPEC_HOME')
  local d = home and ('%s/t%d'):format(home, tmp_count) or (vim.fn.tempname() .. '-t')
  vim.fn.mkdir(d, 'p', tonumber('700', 8))
  M.defer(function()
    vim.fn.delete(d, 'rf')
  end)
  return d
end

--- Runs a command to completion and returns the result table.
function M.sh(cmd, opts)
  return vim.system(cmd, vim.tbl_extend('force', { text = true }, opts or {})):wait(60000)
end

--- Writes an executable shell script `dir`/`name` running `body` (a
--- stand-in for mbsync); returns its path.
---@param dir string
---@param name string
---@param body string
---@return string
function M.script(dir, name, body)
  local path = dir .. '/' .. name
  M.write(path, '#!/bin/sh\n' .. body .. '\n')
  vim.fn.setfperm(path, 'rwx------')
  return path
end

--- Runs the Lua `source` in a headless Neovim of its own (`nvim -l`), for
--- what must not touch this one (module reloads, a missing library).
--- Fails the test if it fails; returns its stdout.
---@param source string
---@return string
function M.nvim_lua(source)
  local file = M.tmpdir() .. '/script.lua'
  M.write(file, source)
  local r = M.sh({ vim.v.progpath, '--headless', '-u', 'NONE', '-i', 'NONE', '-n', '-l', file })
  M.eq(0, r.code, r.stderr)
  return r.stdout
end

--- The command-line tool holds lock `name` of this Neovim's lock folder
--- (`himalaya-sync with-lock NAME -- sleep 60`) until it is killed, at the
--- latest when the test ends.
---@param name string
---@return vim.SystemObj
function M.tool_holds(name)
  local proc = vim.system(
    { M.root .. '/target/release/himalaya-sync', 'with-lock', name, '--', 'sleep', '60' },
    { env = { HIMALAYA_SYNC_LOCK_DIR = require('himalaya.sync.lock').lock_dir() } }
  )
  M.defer(function()
    proc:kill(9)
    proc:wait(5000)
  end)
  return proc
end

--- Holds `file` with flock(1) from another process for `seconds`; the
--- holder (and its sleep) is killed after the test. Returns a handle with
--- `:stop()` that kills it now and waits until it is gone.
function M.hold_lock(file, seconds)
  local proc = vim.system({ 'flock', '-o', '-x', file, 'sleep', tostring(seconds) }, { stdout = false, stderr = false })
  local h = {}
  function h.stop()
    vim.system({ 'pkill', '-9', '-P', tostring(proc.pid) }):wait()
    proc:kill(9)
    proc:wait(5000)
    -- flock(1) reads the file only, and the engine's watch of the lock
    -- folder sees such a holder's end a second later: an open for writing
    -- tells it now. The next test then starts from what runs now.
    local f = io.open(file, 'a')
    if f then
      f:close()
    end
    local account = vim.fs.basename(file):match('^sync%-(.+)%.lock$')
    local manager = package.loaded['himalaya.sync.manager'] --[[@as table?]]
    if account and manager then
      vim.wait(2000, function()
        for _, e in ipairs(manager.get_sync_info().elsewhere) do
          if e.account == account then
            return false
          end
        end
        return true
      end, 10)
    end
  end
  M.defer(h.stop)
  return h
end

--- Another process holds lock `name` of the plugin's lock folder for
--- `seconds` (see hold_lock); returns once the lock is taken.
function M.hold_plugin_lock(name, seconds)
  local lock = require('himalaya.sync.lock')
  local h = M.hold_lock(assert(lock.lock_dir()) .. '/' .. name .. '.lock', seconds)
  M.wait_for(function()
    return lock.is_locked(name)
  end, 5000, 'another process to hold lock ' .. name)
  return h
end

--- Process ids of running processes whose command line matches `pattern`
--- (pgrep -f), excluding pgrep itself.
function M.pgrep(pattern)
  local r = vim.system({ 'pgrep', '-f', pattern }, { text = true }):wait()
  local pids = {}
  for pid in (r.stdout or ''):gmatch('%d+') do
    pids[#pids + 1] = tonumber(pid)
  end
  return pids
end

local python

--- `args` after the Python that runs the test tools (the IMAP fixture,
--- small HTTP clients): the interpreter itself, not a version manager's
--- shim (pyenv's costs 0.15 s of CPU per start here), with -S, as they
--- need the standard library only (site's .pth files cost 50 ms more):
--- a test runs the fixture several times. The runner finds it once and
--- hands it to every spec (HIMALAYA_PYTHON).
---@param ... string
---@return string[]
function M.python(...)
  if not python then
    python = os.getenv('HIMALAYA_PYTHON') or ''
    if python == '' then
      local r = vim.system({ 'python3', '-c', 'import sys; print(sys.executable)' }, { text = true }):wait(20000)
      python = r.code == 0 and vim.trim(r.stdout or '') or ''
      python = python ~= '' and python or 'python3'
    end
  end
  return { python, '-S', ... }
end

--- M.python() as a shell command line.
---@param ... string
---@return string
function M.python_sh(...)
  return table.concat(vim.tbl_map(vim.fn.shellescape, M.python(...)), ' ')
end

local FIXTURE = nil
local function fixture_script()
  FIXTURE = FIXTURE or (M.root .. '/tests/fixture/imap_fixture.py')
  return FIXTURE
end

local mbsync_version

--- The version of the mbsync on PATH, as a comparable number (1.4 is 104).
---@return integer
function M.mbsync_version()
  if mbsync_version == nil then
    local out = vim.system({ 'mbsync', '--version' }, { text = true }):wait(10000).stdout or ''
    local major, minor = out:match('isync (%d+)%.(%d+)')
    assert(major, 'mbsync --version: ' .. out)
    mbsync_version = tonumber(major) * 100 + tonumber(minor)
  end
  return mbsync_version
end

--- A folder name beyond ASCII as the mbsync on PATH writes it (its Maildir
--- folder, its Patterns): isync 1.5 and later in Unicode, 1.4 as the server
--- spells it, in IMAP's modified UTF-7 (`make test-other-mbsync` runs the
--- specs with 1.3 and 1.5).
---@param unicode string
---@param server string
---@return string
function M.spelled(unicode, server)
  return M.mbsync_version() >= 105 and unicode or server
end

--- An mbsyncrc channel section in the keywords of the mbsync on PATH (as
--- the fixture writes them): `Far` and `Near` since 1.4, `Master` and
--- `Slave` before.
---@param name string
---@param far string `:store:` or `:store:box`
---@param near string
---@param rest? string more lines, each ending in a newline
---@return string
function M.channel(name, far, near, rest)
  local old = M.mbsync_version() < 104
  return ('\nChannel %s\n%s %s\n%s %s\n%s'):format(
    name,
    old and 'Master' or 'Far',
    far,
    old and 'Slave' or 'Near',
    near,
    rest or ''
  )
end

--- Runs an imap_fixture.py subcommand and decodes its JSON answer.
function M.fixture_cmd(args)
  local cmd = vim.list_extend(M.python(fixture_script()), args)
  local r = vim.system(cmd, { text = true }):wait(120000)
  if r.code ~= 0 then
    error(('imap_fixture %s failed: %s'):format(args[1], vim.trim(r.stderr or '')), 2)
  end
  return vim.json.decode(r.stdout)
end

--- Starts a throwaway dovecot with generated mail (see tests/fixture); it is
--- stopped and removed after the test. `args` are extra `start` arguments.
function M.fixture(args)
  local dir = M.tmpdir() .. '/imap'
  local fx = M.fixture_cmd(vim.list_extend({ 'start', '--dir', dir }, args or {}))
  M.defer(function()
    vim.system(M.python(fixture_script(), 'stop', '--dir', dir)):wait(20000)
  end)
  function fx.ids(account, side)
    return M.fixture_cmd({ 'message-ids', '--dir', dir, '--account', account, '--side', side })
  end
  function fx.counts(account, side)
    return M.fixture_cmd({ 'counts', '--dir', dir, '--account', account, '--side', side })
  end
  ---@param size? integer bytes each message is padded to
  function fx.deliver(account, folder, count, size)
    return M.fixture_cmd({
      'deliver',
      '--dir',
      dir,
      '--account',
      account,
      '--folder',
      folder,
      '--count',
      tostring(count),
      '--size',
      tostring(size or 0),
    })
  end
  function fx.stop()
    M.fixture_cmd({ 'stop', '--dir', dir, '--keep' })
  end
  M.server_controls(fx)
  return fx
end

--- Test secrets that must never appear in anything the suite produces
--- (spec output, engine logs, notifications). The runner checks them all
--- at the end of a run; add a spec's own secrets (OAuth test tokens) with
--- `M.secret()`, or here when they are fixed strings.
M.SECRETS = { 'fixture-password' }

--- Registers `value` as a secret for the end-of-run check and returns it.
--- Works in any spec's Neovim: the runner reads the file named by
--- `$HIMALAYA_SPEC_SECRETS`.
---@param value string
---@return string
function M.secret(value)
  local file = os.getenv('HIMALAYA_SPEC_SECRETS')
  if file and value ~= '' then
    local f = assert(io.open(file, 'a'))
    f:write(value, '\n')
    f:close()
  end
  return value
end

--- Every secret known to this run: `M.SECRETS`, those registered with
--- `M.secret()`, and the SASL PLAIN blob mbsync would send for each fixture
--- account with each of them (a leak of the wire form counts too).
---@param extra_file? string
---@return string[]
function M.all_secrets(extra_file)
  local list, seen = {}, {}
  local function add(s)
    if s and s ~= '' and not seen[s] then
      seen[s] = true
      list[#list + 1] = s
    end
  end
  for _, s in ipairs(M.SECRETS) do
    add(s)
  end
  local f = extra_file and io.open(extra_file)
  if f then
    for line in f:lines() do
      add(line)
    end
    f:close()
  end
  for _, s in ipairs(vim.deepcopy(list)) do
    for _, user in ipairs({ 'demo', 'work' }) do
      add(vim.base64.encode('\0' .. user .. '\0' .. s))
    end
  end
  return list
end

--- Lines of the files in `paths` (recursively for folders) and of `texts`
--- (name -> text) that contain a secret, as `file:line: secret`.
---@param secrets string[]
---@param paths string[]
---@param texts? table<string, string>
---@return string[]
function M.find_secrets(secrets, paths, texts)
  local hits = {}
  local function scan(name, text)
    local n = 0
    for line in (text .. '\n'):gmatch('([^\n]*)\n') do
      n = n + 1
      for _, s in ipairs(secrets) do
        if line:find(s, 1, true) then
          hits[#hits + 1] = ('%s:%d: contains the test secret %q'):format(name, n, s)
        end
      end
    end
  end
  local function visit(path)
    local stat = uv.fs_lstat(path)
    if not stat then
      return
    end
    if stat.type == 'directory' then
      for entry in vim.fs.dir(path) do
        visit(path .. '/' .. entry)
      end
    elseif stat.type == 'file' and stat.size < 64 * 1024 * 1024 then
      local f = io.open(path, 'rb')
      if f then
        scan(path, f:read('*a') or '')
        f:close()
      end
    end
  end
  for _, p in ipairs(paths) do
    visit(p)
  end
  for name, text in pairs(texts or {}) do
    scan(name, text)
  end
  table.sort(hits)
  return hits
end

--- Captures vim.notify() until the end of the test: returns the list that
--- gets `{ msg, level }` for each call.
---@return [string, integer?][]
function M.notifications()
  local seen = {}
  local orig = vim.notify
  vim.notify = function(msg, level)
    seen[#seen + 1] = { msg, level }
  end
  M.defer(function()
    vim.notify = orig
  end)
  return seen
end

--- Appends every vim.notify() of this Neovim to `file` (the runner scans
--- it for secrets), then passes it on.
---@param file string
function M.record_notifications(file)
  local orig = vim.notify
  vim.notify = function(msg, level, opts)
    local f = io.open(file, 'a')
    if f then
      f:write(('[%s] %s\n'):format(tostring(level), tostring(msg)))
      f:close()
    end
    return orig(msg, level, opts)
  end
end

--- Calls `fn(pid, text)` with `/proc/PID/<file>` of every process that is
--- still there when read: one look at /proc, no process started.
---@param file string
---@param fn fun(pid: integer, text: string)
function M.each_process(file, fn)
  local dir = uv.fs_scandir('/proc')
  while dir do
    local name = uv.fs_scandir_next(dir)
    if not name then
      break
    end
    local f = name:match('^%d+$') and io.open(('/proc/%s/%s'):format(name, file), 'rb')
    if f then
      local text = f:read('*a') or ''
      f:close()
      fn(tonumber(name) --[[@as integer]], text)
    end
  end
end

--- The state letter of a process (R, S, T for stopped, Z...) and its
--- command name, or nil when it is gone.
---@param pid integer
---@return string? state
---@return string? comm
function M.proc_state(pid)
  local f = io.open(('/proc/%d/stat'):format(pid))
  if not f then
    return nil
  end
  local stat = f:read('*a') or ''
  f:close()
  local comm, state = stat:match('^%d+ %((.*)%) (%S)')
  return state, comm
end

--- Adds server controls to a fixture `fx` (from `M.fixture`): `server_pids`,
--- `signal`, `kill_server`, `restart_server`. A stopped (SIGSTOP) server is continued
--- after the test so its cleanup can stop it.
function M.server_controls(fx)
  local function pgid()
    local s = M.read(fx.dir .. '/dovecot.pid')
    return tonumber(s:match('%d+'))
  end
  --- Every dovecot process of the fixture: its process group and all
  --- descendants of the master (login and imap processes get a group of
  --- their own). One look at /proc, no process started: a test that kills
  --- the server mid-sync must do it before the sync is over.
  function fx.server_pids()
    local g = pgid()
    local procs = {}
    M.each_process('stat', function(pid, stat)
      local ppid, pgrp = stat:match('^%d+ %(.*%) %S (%d+) (%d+)')
      if ppid then
        procs[#procs + 1] = { pid = pid, ppid = tonumber(ppid), pgrp = tonumber(pgrp) }
      end
    end)
    local pids, seen = {}, {}
    for _, p in ipairs(procs) do
      if p.pgrp == g then
        seen[p.pid] = true
        pids[#pids + 1] = p.pid
      end
    end
    -- Descendants, whatever their group: until a pass adds none.
    local added = true
    while added do
      added = false
      for _, p in ipairs(procs) do
        if seen[p.ppid] and not seen[p.pid] then
          seen[p.pid] = true
          pids[#pids + 1] = p.pid
          added = true
        end
      end
    end
    return pids
  end
  --- Sends `sig` (e.g. 'STOP', 'CONT') to every dovecot process of the
  --- fixture (master, login, imap, auth), or to `pids` (those an earlier
  --- call returned: no time lost finding them again); returns the pids
  --- signalled.
  ---@param sig string
  ---@param pids? integer[]
  function fx.signal(sig, pids)
    pids = pids or fx.server_pids()
    if #pids > 0 then
      vim.system(vim.list_extend({ 'kill', '-' .. sig, '--' }, vim.tbl_map(tostring, pids))):wait()
    end
    return pids
  end
  --- Kills the server (SIGKILL to the whole group) and waits until no
  --- process of it is left.
  function fx.kill_server()
    local pids = fx.signal('KILL')
    M.wait_for(function()
      for _, pid in ipairs(pids) do
        local state = M.proc_state(pid)
        if state and state ~= 'Z' then
          return false
        end
      end
      return true
    end, 5000, 'the killed dovecot to be gone')
  end
  --- Starts dovecot again on the same folder and port (what a server that
  --- comes back after a crash does); waits for its greeting.
  function fx.restart_server()
    local code = [[
import json, os, shutil, subprocess, sys
sys.path.insert(0, sys.argv[1])
import imap_fixture as f
d = sys.argv[2]
info = json.load(open(os.path.join(d, "fixture.json")))
shutil.rmtree(os.path.join(d, "run"), ignore_errors=True)
err = open(os.path.join(d, "logs", "dovecot.stderr"), "ab")
p = subprocess.Popen([f._find_dovecot(), "-c", info["dovecot_conf"], "-F"], stdin=subprocess.DEVNULL,
                     stdout=err, stderr=err, start_new_session=True, close_fds=True, cwd=d)
open(os.path.join(d, f.PID_FILE), "w").write("%d\n" % p.pid)
ok, why = f._wait_ready(p, info["port"], 10, info["log"], d)
print(json.dumps({"pid": p.pid, "ok": ok, "error": why}))
sys.stdout.flush()
os._exit(0)
]]
    local r = vim.system(M.python('-c', code, M.root .. '/tests/fixture', fx.dir), { text = true }):wait(20000)
    local res = r.code == 0 and vim.json.decode(r.stdout) or {}
    if not res.ok then
      error('dovecot did not start again: ' .. (res.error or r.stderr or '?'), 2)
    end
    return res.pid
  end
  M.defer(function()
    pcall(fx.signal, 'CONT')
  end)
end

--- Writes an executable `DIR/mbsync` that runs the real mbsync and appends
--- `start PID NS` before and `end PID NS RC` after it to `log` (each append
--- under flock, so lines of concurrent runs never mix). Point
--- `mbsync.cmd` at it, or put DIR first in PATH. Returns the script path.
---@param log string
---@return string
function M.mbsync_wrapper(log)
  local real = vim.fn.exepath('mbsync')
  M.ok(real ~= '', 'mbsync is installed')
  local dir = M.tmpdir()
  local path = dir .. '/mbsync'
  M.write(
    path,
    ([[
#!/bin/sh
log=%s
( flock 9; echo "start $$ $(date +%%s%%N)" >&9 ) 9>>"$log"
%s "$@"
rc=$?
( flock 9; echo "end $$ $(date +%%s%%N) $rc" >&9 ) 9>>"$log"
exit $rc
]]):format(vim.fn.shellescape(log), vim.fn.shellescape(real))
  )
  vim.fn.setfperm(path, 'rwx------')
  return path
end

--- Parses a wrapper log (see `M.mbsync_wrapper`): the runs as
--- `{pid, start, stop, rc}` (ns; `stop` nil when no end was logged), and
--- the pairs of runs whose times overlap.
---@param log string
---@return {pid: integer, start: number, stop?: number, rc?: integer}[] runs ns from the log's first second
---@return string[] overlaps
function M.mbsync_runs(log)
  local runs, open = {}, {}
  -- Nanoseconds since the first whole second in the log: exact in a double
  -- (a raw `date +%s%N` is not).
  local base
  local function ns_of(stamp)
    local secs, nanos = tonumber(stamp:sub(1, -10)), tonumber(stamp:sub(-9))
    base = base or secs
    return (secs - base) * 1e9 + nanos
  end
  local f = io.open(log)
  if f then
    for line in f:lines() do
      local what, pid, stamp, rc = line:match('^(%a+) (%d+) (%d+) ?(%d*)$')
      local ns = stamp and ns_of(stamp)
      if what == 'start' then
        local r = { pid = tonumber(pid), start = ns }
        runs[#runs + 1] = r
        open[r.pid] = r
      elseif what == 'end' and open[tonumber(pid)] then
        local r = open[tonumber(pid)]
        r.stop, r.rc = ns, tonumber(rc)
        open[r.pid] = nil
      end
    end
    f:close()
  end
  table.sort(runs, function(a, b)
    return a.start < b.start
  end)
  local overlaps = {}
  local latest = nil
  for _, r in ipairs(runs) do
    if latest and r.start < (latest.stop or math.huge) then
      overlaps[#overlaps + 1] = ('mbsync %d [%d, %s] overlaps mbsync %d [%d, %s]'):format(
        r.pid,
        r.start,
        tostring(r.stop),
        latest.pid,
        latest.start,
        tostring(latest.stop)
      )
    end
    if not latest or (r.stop or math.huge) > (latest.stop or math.huge) then
      latest = r
    end
  end
  return runs, overlaps
end

--- Configures the plugin for `mbsyncrc`: quiet, and failures final at once
--- (no retries) so error kinds can be checked; `extra` overrides.
function M.use(mbsyncrc, extra)
  vim.g.himalaya_sync = vim.tbl_deep_extend(
    'force',
    { mbsync = { config = mbsyncrc }, notify = false, retry = { max_attempts = 0 } },
    extra or {}
  )
  -- The next test starts from no configuration.
  M.defer(function()
    vim.g.himalaya_sync = nil
  end)
end

--- Writes `text` to `path`.
function M.write(path, text)
  local f = assert(io.open(path, 'w'))
  f:write(text)
  f:close()
end

--- Reads a whole file.
function M.read(path)
  local f = assert(io.open(path))
  local s = f:read('*a')
  f:close()
  return s
end

--- How many times `text` is in the plugin's log, once it is there at all:
--- the engine writes the log from a thread of the lowest priority, which
--- may come to it a while later on a busy machine.
---@param text string
---@return integer
function M.logged(text)
  local path = require('himalaya.sync.manager').log_path()
  local function count()
    local ok, log = pcall(M.read, path)
    return ok and select(2, log:gsub(vim.pesc(text), '')) or 0
  end
  M.wait_for(function()
    return count() > 0
  end, 10000, 'the log to say ' .. text)
  -- A repeat queued with it would be written a moment later.
  vim.wait(200)
  return count()
end

--- A TCP server on 127.0.0.1 that accepts connections and never answers
--- (a hung IMAP server), or says only `greeting` (another kind of server).
--- Returns its port; closed after the test.
---@param greeting? string
function M.silent_server(greeting)
  local server = assert(uv.new_tcp())
  assert(server:bind('127.0.0.1', 0))
  local clients = {}
  server:listen(16, function()
    local c = uv.new_tcp()
    server:accept(c)
    clients[#clients + 1] = c
    if greeting then
      c:write(greeting)
    end
  end)
  M.defer(function()
    for _, c in ipairs(clients) do
      c:close()
    end
    server:close()
  end)
  return server:getsockname().port
end

--- A TCP relay on 127.0.0.1:`port` to 127.0.0.1:`target` (a server that
--- "comes back", or a slow link when `delay_ms` delays every chunk in each
--- direction). Closed after the test or by `:close()`; `:connections()`
--- says how many it has accepted. It holds at most RELAY_BUFFER bytes per
--- direction, as a link does: a backlog that went on flowing after the
--- server froze would keep a watchdog from firing for as long as it lasts.
local RELAY_BUFFER = 64 * 1024
function M.relay(port, target, delay_ms)
  local server = assert(uv.new_tcp())
  assert(server:bind('127.0.0.1', port))
  local handles = {}
  local accepted = 0
  local function close(h)
    if h and not h:is_closing() then
      h:close()
    end
  end
  server:listen(16, function()
    local client = uv.new_tcp()
    server:accept(client)
    accepted = accepted + 1
    local up = uv.new_tcp()
    handles[#handles + 1] = client
    handles[#handles + 1] = up
    up:connect('127.0.0.1', target, function(err)
      if err then
        return close(client)
      end
      -- Same delay for every chunk: timers fire in order, so order is kept.
      local function forward(from, to)
        local held, paused = 0, false
        local on_read
        on_read = function(e, data)
          if data and not e then
            held = held + #data
            if held > RELAY_BUFFER and not paused then
              paused = true
              from:read_stop()
            end
          end
          local function go()
            if to:is_closing() then
              return
            end
            if data and not e then
              to:write(data, function()
                held = held - #data
                if paused and held <= RELAY_BUFFER / 2 and not from:is_closing() then
                  paused = false
                  from:read_start(on_read)
                end
              end)
            else
              close(up)
              close(client)
            end
          end
          if delay_ms and delay_ms > 0 then
            vim.defer_fn(go, delay_ms)
          else
            go()
          end
        end
        from:read_start(on_read)
      end
      forward(client, up)
      forward(up, client)
    end)
  end)
  local r = {}
  function r.connections()
    return accepted
  end
  function r.close()
    for _, h in ipairs(handles) do
      close(h)
    end
    close(server)
  end
  M.defer(r.close)
  return r
end

--- A process's command line (/proc/PID/cmdline), arguments joined by
--- spaces.
---@param raw string
---@return string
local function command_line(raw)
  return (raw:gsub('%z$', ''):gsub('%z', ' '))
end

--- Watches the processes whose command line (arguments joined by spaces)
--- `matches` until the test ends; returns a function giving the most seen
--- at once. Samples every 20 ms by reading /proc from a timer: a pgrep
--- started 50 times a second took most of a CPU through the 60 s soak,
--- slowing the spec beside it (and a blocking call from a timer would nest
--- event-loop waits inside the test's own `vim.wait`).
---
--- A process whose parent matches too is part of it, not another one:
--- mbsync 1.5 forks a copy of itself to look up the server's address. And
--- a scan is no snapshot: a process that ends while it runs can be counted
--- beside its successor, started meanwhile; so the processes counted are
--- looked at again after the scan, and those gone by then are left out.
---@param matches fun(cmdline: string): boolean
---@return fun(): integer
function M.watch_processes(matches)
  local most = 0
  local timer = assert(uv.new_timer())
  timer:start(0, 20, function()
    local seen = {}
    M.each_process('cmdline', function(pid, raw)
      if raw ~= '' and matches(command_line(raw)) then
        seen[pid] = true
      end
    end)
    local n = 0
    for pid in pairs(seen) do
      local f = io.open(('/proc/%d/stat'):format(pid), 'rb')
      local stat = f and f:read('*a') or ''
      if f then
        f:close()
      end
      -- After the command name, which may hold blanks: state, then ppid.
      local ppid = tonumber(stat:match('.*%) %a (%d+)'))
      if ppid and not seen[ppid] then
        n = n + 1
      end
    end
    most = math.max(most, n)
  end)
  M.defer(function()
    timer:stop()
    timer:close()
  end)
  return function()
    return most
  end
end

--- A copy of a fixture's mbsyncrc whose Port points at `port`.
function M.mbsyncrc_on_port(fx, port, name)
  local rc = fx.dir .. '/mbsyncrc-' .. name
  M.write(rc, (M.read(fx.mbsyncrc):gsub('\nPort %d+', '\nPort ' .. port)))
  return rc
end

--- Writes `dir`/mbsyncrc: the one account "demo" on 127.0.0.1:`port`
--- (no fixture behind it: a closed port, or a server that never answers),
--- its Maildir under `dir`/mail. Returns the mbsyncrc's path.
---@param dir string
---@param port integer
---@return string
function M.standalone_mbsyncrc(dir, port)
  local path = dir .. '/mbsyncrc'
  vim.fn.mkdir(dir .. '/mail', 'p')
  M.write(
    path,
    ([[
IMAPAccount demo
Host 127.0.0.1
Port %d
User demo
Pass fixture-password
SSLType None
AuthMechs LOGIN
Timeout 120

IMAPStore demo-remote
Account demo

MaildirStore demo-local
Path %s/mail/
Inbox %s/mail/INBOX
SubFolders Verbatim
]]):format(port, dir, dir)
      .. M.channel('demo', ':demo-remote:', ':demo-local:', 'Patterns *\nCreate Both\nSyncState *\n')
  )
  return path
end

--- Runs `script` in another headless Neovim (`nvim -l`), collecting its
--- stdout in the returned table's `out`; killed and reaped after the test.
---@param script string path of a Lua file
---@return {proc: vim.SystemObj, out: string}
function M.child_nvim(script)
  local state = { out = '' }
  state.proc = vim.system({ vim.v.progpath, '--headless', '-u', 'NONE', '-i', 'NONE', '-n', '-l', script }, {
    text = true,
    stdout = function(_, data)
      if data then
        state.out = state.out .. data
      end
    end,
  })
  M.defer(function()
    pcall(state.proc.kill, state.proc, 9)
    pcall(state.proc.wait, state.proc, 5000)
  end)
  return state
end

--- A port on 127.0.0.1 where nothing listens.
function M.closed_port()
  local s = assert(uv.new_tcp())
  assert(s:bind('127.0.0.1', 0))
  local port = s:getsockname().port
  s:close()
  return port
end

--- Starts a sync through the manager and waits for its end; returns the
--- result, the final info and every progress seen.
function M.sync_and_wait(type, opts, timeout_ms)
  local manager = require('himalaya.sync.manager')
  local done, progress = nil, {}
  local theirs = opts and opts.on_progress
  opts = vim.tbl_extend('force', opts or {}, {
    on_progress = function(p, info)
      progress[#progress + 1] = vim.deepcopy(p)
      if theirs then
        theirs(p, info)
      end
    end,
    on_complete = function(result, info)
      done = { result = result, info = info }
    end,
  })
  local id, err, kind = manager.start_sync(type, opts)
  if not id then
    return nil, err, kind
  end
  M.wait_for(function()
    return done ~= nil
  end, timeout_ms or 120000, type .. ' sync to finish')
  return done.result, done.info, progress, id
end

--- POSTs JSON to `url` (Python's standard library: no curl needed); returns
--- whether it succeeded and the answer's text.
function M.http_post(url, body)
  local script = [[
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST",
                             headers={"Content-Type": "application/json"})
try:
    print(urllib.request.urlopen(req, timeout=10).read().decode())
except urllib.error.HTTPError as e:
    print(e.read().decode()); sys.exit(1)
]]
  local res =
    vim.system(M.python('-c', script, url, body and vim.json.encode(body) or '{}'), { text = true }):wait(15000)
  return res.code == 0, vim.trim(res.stdout or '')
end

function M.http_get(url)
  local script = 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())'
  local res = vim.system(M.python('-c', script, url), { text = true }):wait(15000)
  assert(res.code == 0, res.stderr)
  return vim.json.decode(res.stdout)
end

--- Starts the OAuth2 test server (tests/fixture/oauth_server.mjs) and returns
--- the JSON line it prints (URLs, client id); stopped after the test.
function M.oauth_server()
  local lines = {}
  local proc = vim.system({ 'node', M.root .. '/tests/fixture/oauth_server.mjs' }, {
    stdin = true,
    text = true,
    stdout = function(_, data)
      if data then
        lines[#lines + 1] = data
      end
    end,
  })
  M.defer(function()
    proc:kill('sigterm')
    proc:wait(5000)
  end)
  M.wait_for(function()
    return table.concat(lines):find('\n') ~= nil
  end, 20000, 'the OAuth2 server to start')
  return vim.json.decode(table.concat(lines):match('^[^\n]+'))
end

--- A dovecot with `folders` (imap_fixture.py `--folders`) that takes XOAUTH2
--- tokens from the OAuth2 test `server`, an mbsyncrc whose password is our
--- token command (`himalaya-sync token demo`), and the plugin configured
--- for both: account `demo`, tokens in an encrypted store. Returns the
--- fixture and the store folder; the configuration is reset after the test.
---@param server table what M.oauth_server() returned
---@param folders string
function M.oauth_account(server, folders)
  local fx = M.fixture({ '--folders', folders, '--oauth-introspect', server.introspect_url })
  local rc = fx.dir .. '/mbsyncrc-oauth'
  local text = M.read(fx.mbsyncrc)
    :gsub('\nPass [^\n]*', '\nPassCmd "' .. M.root .. '/target/release/himalaya-sync token demo"')
    :gsub('\nAuthMechs [^\n]*', '\nAuthMechs XOAUTH2')
  M.write(rc, text)
  local store = M.tmpdir() .. '/tokens'
  M.setup_for_test({
    mbsync = { config = rc },
    notify = false,
    retry = { max_attempts = 0 },
    accounts = {
      demo = {
        oauth = {
          provider = 'generic',
          client_id = server.client_id,
          auth_url = server.auth_url,
          token_url = server.token_url,
          device_url = server.device_url,
          scopes = { 'imap' },
          store = { backend = 'encrypted', dir = store, key_cmd = 'printf correct-horse-battery-staple' },
        },
      },
    },
  })
  return fx, store
end

--- Authorizes `demo` with the device flow, approving the code on the
--- OAuth2 test `server` once the flow has asked for one.
---@param server table what M.oauth_server() returned
function M.oauth_authorize(server)
  local done
  require('himalaya.sync.oauth').authorize('demo', { device = true, timeout = 30 }, function(success, err)
    done = { success, err }
  end)
  M.wait_for(function()
    return (M.http_post(server.control_url .. '/device', { action = 'approve' }))
  end, 20000, 'a device code to approve')
  M.wait_for(function()
    return done ~= nil
  end, 30000, 'authorization')
  M.eq(true, done[1], done[2])
end

return M
