local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

--- Child script ending: counts 3 test events from `lib` into `out.got`
--- and writes `out` as JSON.
local PROBE = [[
out.got = 0
local id = lib.emit_test_events(3, 'probe')
native.on_id(id, function()
  out.got = out.got + 1
end)
vim.wait(5000, function()
  return out.got == 3
end, 10)
io.stdout:write(vim.json.encode(out))
]]

--- Runs `body` (Lua, with this checkout on 'runtimepath') in a child
--- Neovim with extra environment `env`, in the folder `cwd` (default: this
--- Neovim's); returns what it wrote to stdout, JSON-decoded.
local function in_child(body, env, cwd)
  local script = t.tmpdir() .. '/child.lua'
  t.write(script, ('vim.opt.rtp:prepend(%q)\n'):format(t.root) .. body)
  local res = vim
    .system(
      { vim.v.progpath, '--headless', '-u', 'NONE', '-i', 'NONE', '-n', '-l', script },
      { env = env, cwd = cwd, text = true }
    )
    :wait(30000)
  eq(0, res.code, res.stderr)
  return vim.json.decode(res.stdout)
end

--- Child script: loads the library and writes where it was found, whether
--- it loaded, and whether a file under `$PLANTED` is mapped into the child.
local LOAD_AND_REPORT = [[
local native = require('himalaya.sync.native')
local loc = native.find() or {}
local lib, err = native.get()
local f = assert(io.open('/proc/self/maps'))
local maps = f:read('*a')
f:close()
io.stdout:write(vim.json.encode({
  kind = loc.kind,
  path = loc.path,
  lib = lib ~= nil,
  err = err,
  version = lib and lib.version,
  planted_mapped = maps:find(os.getenv('PLANTED'), 1, true) ~= nil,
  lua_would_load = package.searchpath('himalaya_sync', package.cpath),
}))
]]

describe('loading', function()
  it('the plugin file registers the command without loading anything', function()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    eq(2, vim.fn.exists(':HimalayaSync'))
    eq(nil, package.loaded['himalaya.sync.native'])
    eq(nil, package.loaded['himalaya.sync.commands'])
  end)

  it('reports a missing library with how to build it', function()
    vim.env.HIMALAYA_SYNC_LIB = '/nonexistent/libhimalaya_sync.so'
    t.defer(function()
      vim.env.HIMALAYA_SYNC_LIB = nil
    end)
    local native = require('himalaya.sync.native')
    local lib, err = native.get()
    eq(nil, lib)
    contains(err, '/nonexistent/libhimalaya_sync.so')
    local lock = require('himalaya.sync.lock')
    local got, lerr = lock.acquire_lock('x', 0)
    eq(false, got)
    contains(lerr, 'HIMALAYA_SYNC_LIB')
    -- The version asked for (to report a problem) is there without it.
    local seen = t.notifications()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    vim.cmd('HimalayaSync version')
    contains(seen[1][1], 'himalaya-sync ' .. require('himalaya.sync.version') .. ', no library: ')
  end)

  it('in a fast event before it is loaded, the library is not loaded and the call says why', function()
    local out = in_child([[
local mbsync = require('himalaya.sync.mbsync')
local native = require('himalaya.sync.native')
local out = {}
local timer = vim.uv.new_timer()
timer:start(0, 0, function()
  local ok, parsed = pcall(mbsync.parse_progress_line, 'C: 0/1  B: 0/1  F: +1/2 *0/0 #0/0  N: +0/0 *0/0 #0/0')
  local lib, err = native.get()
  out = { ok = ok, parsed = parsed == nil, lib = lib == nil, err = err, loaded = native.is_loaded() }
end)
vim.wait(5000, function()
  return out.ok ~= nil
end, 10)
io.stdout:write(vim.json.encode(out))
]])
    eq(true, out.ok, 'no E5560')
    eq(true, out.parsed, 'nil, as documented')
    eq(true, out.lib)
    eq(false, out.loaded)
    contains(out.err, 'is not loaded in a fast event')
  end)

  it('a file that is no library is named once, with one prefix', function()
    local junk = t.tmpdir() .. '/libhimalaya_sync.so'
    t.write(junk, 'not a shared object\n')
    vim.env.HIMALAYA_SYNC_LIB = junk
    t.defer(function()
      vim.env.HIMALAYA_SYNC_LIB = nil
    end)
    local seen = t.notifications()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    vim.cmd('HimalayaSync version')
    contains(seen[1][1], ', no library: cannot load ' .. junk .. ': ')
    ok(not seen[1][1]:find('no library: himalaya-sync:', 1, true), seen[1][1])
  end)

  it('a cache folder that cannot be made is one line, not a traceback', function()
    -- A child Neovim whose cache folder for the staged library is a file.
    local cache = t.tmpdir() .. '/cache'
    vim.fn.mkdir(cache .. '/nvim', 'p')
    t.write(cache .. '/nvim/himalaya-sync', 'not a folder')
    local out = in_child(
      [[
local lib, err = require('himalaya.sync.native').get()
io.stdout:write(vim.json.encode({ lib = lib ~= nil, err = err }))
]],
      { XDG_CACHE_HOME = cache }
    )
    eq(false, out.lib)
    contains(out.err, 'cannot create the folder ' .. cache .. '/nvim/himalaya-sync: a file is in the way; remove it')
    eq(nil, out.err:find('\n'), out.err)
  end)

  it('another Neovim creating the cache folders first, at any level, is fine', function()
    -- What several Neovims starting at once do to each other (the soak spec
    -- found it): every folder this Neovim is about to create has just been
    -- created by another one. mkdir(..., 'p') then fails with E739 and
    -- leaves the deeper levels uncreated; fs_mkdir fails with EEXIST.
    local cache = t.tmpdir() .. '/race/cache'
    local out = in_child(
      [[
local real = vim.uv.fs_mkdir
vim.uv.fs_mkdir = function(path, mode)
  real(path, mode)
  return nil, 'EEXIST: file already exists: ' .. path, 'EEXIST'
end
vim.fn.mkdir = function(path)
  local missing = path
  while vim.fn.isdirectory(vim.fs.dirname(missing)) == 0 do
    missing = vim.fs.dirname(missing)
  end
  real(missing, 448)
  error('Vim:E739: Cannot create directory ' .. missing .. ': file already exists')
end
local lib, err = require('himalaya.sync.native').get()
io.stdout:write(vim.json.encode({ lib = lib ~= nil, err = err }))
]],
      { XDG_CACHE_HOME = cache }
    )
    eq(true, out.lib, out.err)
    eq(1, vim.fn.isdirectory(cache .. '/nvim/himalaya-sync'))
  end)

  it('a library whose events cannot be watched starts nothing, and recovers', function()
    -- A child Neovim in which watching the event pipe fails twice.
    local out = in_child([[
local real, failures = vim.uv.new_poll, 2
vim.uv.new_poll = function(...)
  if failures > 0 then
    failures = failures - 1
    return nil, 'EMFILE: too many open files'
  end
  return real(...)
end
local native = require('himalaya.sync.native')
local out = {}
local lib1, err1 = native.get()
out.lib1, out.err1 = lib1 ~= nil, err1
out.id, out.err2 = require('himalaya.sync.manager').start_sync('full', { account = 'nope' })
local lib = native.get()
out.lib3 = lib ~= nil
]] .. PROBE)
    eq(false, out.lib1)
    contains(out.err1, 'cannot receive events from the library: EMFILE')
    eq(nil, out.id)
    contains(out.err2, 'cannot receive events from the library')
    eq(true, out.lib3)
    eq(3, out.got)
  end)

  it('a reloaded build whose events cannot be watched is watched at the next use', function()
    -- A child Neovim on a copy of the library, rebuilt (touched) and
    -- reloaded while watching the new event pipe fails once.
    local copy = t.tmpdir() .. '/libhimalaya_sync.so'
    assert(vim.uv.fs_copyfile(require('himalaya.sync.native').build_path(), copy))
    local out = in_child([[
local native = require('himalaya.sync.native')
local out = {}
out.first = native.get() ~= nil
local later = os.time() + 10
vim.uv.fs_utime(os.getenv('HIMALAYA_SYNC_LIB'), later, later)
local real = vim.uv.new_poll
vim.uv.new_poll = function(...)
  vim.uv.new_poll = real
  return nil, 'EMFILE: too many open files'
end
out.reloaded, out.msg = native.reload()
local lib = assert(native.get())
]] .. PROBE, { HIMALAYA_SYNC_LIB = copy })
    eq(true, out.first)
    eq(false, out.reloaded)
    contains(out.msg, 'cannot receive events from the library: EMFILE')
    eq(3, out.got, 'events of the new build arrive')
  end)

  it("a reloaded build watches other processes' syncs at once, and forgets what the old one saw", function()
    local copy = t.tmpdir() .. '/libhimalaya_sync.so'
    assert(vim.uv.fs_copyfile(require('himalaya.sync.native').build_path(), copy))
    -- The other process; stopped here whatever the child did.
    t.defer(function()
      for _, pid in ipairs(t.pgrep('with-lock sync-demo -- sleep 61[.]5')) do
        vim.uv.kill(pid, 'sigkill')
      end
    end)
    local out = in_child(
      ([[
local native = require('himalaya.sync.native')
local manager = require('himalaya.sync.manager')
local lock = require('himalaya.sync.lock')
local out = {}
assert(manager.history())
local holder = vim.system(
  { %q, 'with-lock', 'sync-demo', '--', 'sleep', '61.5' },
  { env = { HIMALAYA_SYNC_LOCK_DIR = lock.lock_dir() } }
)
local function shown(text)
  return vim.wait(5000, function()
    return manager.statusline() == text
  end, 10)
end
out.before = shown(('sync demo (himalaya-sync %%d)'):format(holder.pid))
local later = os.time() + 10
vim.uv.fs_utime(os.getenv('HIMALAYA_SYNC_LIB'), later, later)
out.reloaded = native.reload()
out.again = shown(('sync demo (himalaya-sync %%d)'):format(holder.pid))
holder:kill(9)
holder:wait()
out.after = shown('')
out.text = manager.statusline()
io.stdout:write(vim.json.encode(out))
]]):format(t.root .. '/target/release/himalaya-sync'),
      { HIMALAYA_SYNC_LIB = copy }
    )
    eq({ before = true, reloaded = true, again = true, after = true, text = '' }, out)
  end)

  it('the command-line tool is the one built with the library, else the one on $PATH', function()
    -- A child Neovim on a copy of the library in a folder of its own.
    local dir = t.tmpdir()
    local copy = dir .. '/libhimalaya_sync.so'
    assert(vim.uv.fs_copyfile(require('himalaya.sync.native').build_path(), copy))
    local bin = t.tmpdir()
    local out = in_child(
      ([[
local native = require('himalaya.sync.native')
local dir, bin, tool = %q, %q, %q
local out = {}
vim.env.PATH = '/usr/bin:/bin'
out.none = native.tool_path() or vim.NIL
assert(vim.uv.fs_copyfile(tool, bin .. '/himalaya-sync'))
vim.uv.fs_chmod(bin .. '/himalaya-sync', 448)
vim.env.PATH = bin .. ':/usr/bin:/bin'
out.on_path = native.tool_path()
assert(vim.uv.fs_copyfile(tool, dir .. '/himalaya-sync'))
vim.uv.fs_chmod(dir .. '/himalaya-sync', 448)
out.own = native.tool_path()
assert(native.get())
out.loaded = native.tool_path()
io.stdout:write(vim.json.encode(out))
]]):format(dir, bin, t.root .. '/target/release/himalaya-sync'),
      { HIMALAYA_SYNC_LIB = copy }
    )
    eq(vim.NIL, out.none)
    eq(bin .. '/himalaya-sync', out.on_path)
    eq(dir .. '/himalaya-sync', out.own, 'the one next to the library comes first')
    eq(dir .. '/himalaya-sync', out.loaded)
  end)

  it('a himalaya_sync.so in the current folder or on a relative package.cpath entry is never loaded', function()
    -- Neovim's package.cpath starts with ./?.so: whoever can write to the
    -- folder Neovim starts in would choose the code it runs.
    local cwd = t.tmpdir()
    vim.fn.mkdir(cwd .. '/rel', 'p')
    for _, plant in ipairs({ cwd .. '/himalaya_sync.so', cwd .. '/rel/himalaya_sync.so' }) do
      assert(vim.uv.fs_copyfile(require('himalaya.sync.native').build_path(), plant))
    end
    local out =
      in_child("package.cpath = package.cpath .. ';rel/?.so'\n" .. LOAD_AND_REPORT, { PLANTED = cwd .. '/' }, cwd)
    eq('./himalaya_sync.so', out.lua_would_load, "the planted file is what Lua's own search finds")
    eq('file', out.kind)
    eq(require('himalaya.sync.native').build_path(), out.path)
    eq(true, out.lib, out.err)
    eq(false, out.planted_mapped, 'no planted file is loaded')
  end)

  it('a library on an absolute package.cpath entry is loaded as a rock, from that file', function()
    local tree = t.tmpdir()
    assert(vim.uv.fs_copyfile(require('himalaya.sync.native').build_path(), tree .. '/himalaya_sync.so'))
    local out = in_child(
      ('package.cpath = %q .. package.cpath\n'):format(tree .. '/?.so;') .. LOAD_AND_REPORT,
      { PLANTED = tree .. '/himalaya_sync.so' }
    )
    eq({ 'rock', tree .. '/himalaya_sync.so' }, { out.kind, out.path })
    eq(true, out.lib, out.err)
    eq(require('himalaya.sync.version'), out.version)
    eq(true, out.planted_mapped, 'the rock itself is loaded, not a copy')
  end)

  it('a staging folder that others can use, another user owns, or that is a symlink is refused', function()
    local cases = {
      {
        'mode 0777',
        function(dir)
          assert(vim.uv.fs_chmod(dir, tonumber('777', 8)))
        end,
        'other users have access to it (mode 777)',
      },
      {
        'mode 0750',
        function(dir)
          assert(vim.uv.fs_chmod(dir, tonumber('750', 8)))
        end,
        'other users have access to it (mode 750)',
      },
      {
        'owned by uid 65534',
        function(dir)
          assert(vim.uv.fs_chown(dir, 65534, 65534))
        end,
        'it belongs to user id 65534, not to you (' .. vim.uv.getuid() .. ')',
      },
      {
        'a symlink to a private folder',
        function(dir)
          local elsewhere = t.tmpdir()
          vim.fn.delete(dir, 'd')
          assert(vim.uv.fs_symlink(elsewhere, dir))
        end,
        'it is a symbolic link',
      },
    }
    for _, c in ipairs(cases) do
      local cache = t.tmpdir() .. '/cache'
      local dir = cache .. '/nvim/himalaya-sync'
      vim.fn.mkdir(dir, 'p', tonumber('700', 8))
      c[2](dir)
      local out = in_child(LOAD_AND_REPORT, { XDG_CACHE_HOME = cache, PLANTED = dir .. '/' })
      eq(false, out.lib, c[1])
      contains(out.err, 'refusing to load the library from ' .. dir .. ': ' .. c[3], c[1])
      contains(out.err, 'remove it (rm -r ', c[1])
      eq(nil, out.err:find('\n'), out.err)
      eq({}, vim.fn.readdir(dir), c[1] .. ': nothing staged there')
    end
  end)

  it('a symlink or a file of another user at the staged name is replaced, never loaded', function()
    -- A build of its own ($HIMALAYA_SYNC_LIB), so the staged name stays
    -- the same from one child Neovim to the next.
    local copy = t.tmpdir() .. '/libhimalaya_sync.so'
    assert(vim.uv.fs_copyfile(require('himalaya.sync.native').build_path(), copy))
    local cache = t.tmpdir() .. '/cache'
    local dir = cache .. '/nvim/himalaya-sync'
    local decoy = t.tmpdir() .. '/decoy.so'
    t.write(decoy, 'not a library')
    local env = { XDG_CACHE_HOME = cache, HIMALAYA_SYNC_LIB = copy, PLANTED = decoy }
    eq(true, in_child(LOAD_AND_REPORT, env).lib)
    local staged = vim.fn.glob(dir .. '/libhimalaya_sync-*', false, true)
    eq(1, #staged)
    staged = staged[1]
    local cases = {
      {
        'a symlink to another file',
        function()
          vim.fn.delete(staged)
          assert(vim.uv.fs_symlink(decoy, staged))
        end,
      },
      {
        'a file of another user',
        function()
          assert(vim.uv.fs_chown(staged, 65534, 65534))
        end,
      },
      {
        'a file others can write to',
        function()
          assert(vim.uv.fs_chmod(staged, tonumber('666', 8)))
        end,
      },
      {
        'a file of another size',
        function()
          t.write(staged, 'not a library')
          assert(vim.uv.fs_chmod(staged, tonumber('700', 8)))
        end,
      },
    }
    for _, c in ipairs(cases) do
      c[2]()
      local out = in_child(LOAD_AND_REPORT, env)
      eq(true, out.lib, c[1] .. ': ' .. tostring(out.err))
      eq(false, out.planted_mapped, c[1] .. ': the decoy is not loaded')
      local st = assert(vim.uv.fs_lstat(staged))
      eq({ 'file', vim.uv.getuid(), tonumber('700', 8) }, { st.type, st.uid, bit.band(st.mode, 511) }, c[1])
      eq(vim.uv.fs_stat(copy).size, st.size, c[1])
      eq('not a library', t.read(decoy), c[1] .. ': the decoy is not written through the symlink')
    end
    eq({ vim.fs.basename(staged) }, vim.fn.readdir(dir), 'no temp file is left behind')
  end)

  it('refuses a library of another version', function()
    package.loaded['himalaya.sync.native'] = nil
    package.loaded['himalaya.sync.version'] = '9.9.9'
    t.defer(function()
      package.loaded['himalaya.sync.native'] = nil
      package.loaded['himalaya.sync.version'] = nil
    end)
    local lib, err = require('himalaya.sync.native').get()
    eq(nil, lib)
    contains(err, 'expects 9.9.9')
    contains(err, ':HimalayaSync build')
  end)

  it('a library named by $HIMALAYA_SYNC_LIB gets advice about that variable, and no build', function()
    package.loaded['himalaya.sync.native'] = nil
    package.loaded['himalaya.sync.version'] = '9.9.9'
    vim.env.HIMALAYA_SYNC_LIB = require('himalaya.sync.native').build_path()
    t.defer(function()
      vim.env.HIMALAYA_SYNC_LIB = nil
      package.loaded['himalaya.sync.native'] = nil
      package.loaded['himalaya.sync.version'] = nil
    end)
    local lib, err = require('himalaya.sync.native').get()
    eq(nil, lib)
    contains(err, 'point $HIMALAYA_SYNC_LIB at a build of version 9.9.9')
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local notes = t.notifications()
    vim.cmd('HimalayaSync build')
    eq(1, #notes, vim.inspect(notes))
    contains(notes[1][1], 'not built here')
    eq(vim.log.levels.ERROR, notes[1][2])
  end)

  it(':HimalayaSync build runs one cargo at a time, and stops it at its time limit and at exit', function()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local commands = require('himalaya.sync.commands')
    -- A stand-in for cargo that never ends, with a child of its own like
    -- the compilers cargo runs; it ignores SIGTERM when told to.
    local bin = t.tmpdir()
    t.script(bin, 'cargo', '[ -n "$STANDIN_IGNORE_TERM" ] && trap "" TERM\nsleep 41.25 &\nsleep 42.5')
    local path, limit, grace = vim.env.PATH, commands.BUILD_TIMEOUT_MS, commands.BUILD_GRACE_MS
    vim.env.PATH = bin .. ':' .. path
    t.defer(function()
      vim.env.PATH, vim.env.STANDIN_IGNORE_TERM = path, nil
      commands.BUILD_TIMEOUT_MS, commands.BUILD_GRACE_MS = limit, grace
      -- Whatever a failed test left running.
      for _, pattern in ipairs({ 'sleep 41[.]25', 'sleep 42[.]5', bin .. '/cargo' }) do
        for _, pid in ipairs(t.pgrep(pattern)) do
          vim.uv.kill(pid, 'sigkill')
        end
      end
    end)
    local function running()
      return #t.pgrep('sleep 41[.]25') + #t.pgrep('sleep 42[.]5')
    end
    local notes = t.notifications()
    local function last()
      return notes[#notes] or {}
    end

    -- Long enough for the checks below on a busy machine, each of which
    -- runs pgrep twice.
    commands.BUILD_TIMEOUT_MS, commands.BUILD_GRACE_MS = 10000, 300
    vim.cmd('HimalayaSync build')
    t.wait_for(function()
      return running() == 2
    end, 5000, 'the stand-in and its child to run')
    vim.cmd('HimalayaSync build')
    contains(last()[1], 'a build is already running')
    eq(vim.log.levels.ERROR, last()[2])
    eq(2, running(), 'no second cargo')
    t.wait_for(function()
      return running() == 0
    end, 20000, 'the build and its child to be stopped at the time limit')
    t.wait_for(function()
      return (last()[1] or ''):find('did not finish within', 1, true) ~= nil
    end, 5000, 'the message about the time limit')
    eq(vim.log.levels.ERROR, last()[2])

    -- At exit (VimLeavePre), a build that ignores SIGTERM is killed after
    -- the grace, and nothing more is said about it.
    commands.BUILD_TIMEOUT_MS = limit
    vim.env.STANDIN_IGNORE_TERM = '1'
    vim.cmd('HimalayaSync build')
    contains(last()[1], 'building the library')
    t.wait_for(function()
      return running() == 2
    end, 5000, 'the second build to run')
    local started = vim.uv.hrtime()
    vim.api.nvim_exec_autocmds('VimLeavePre', { group = 'himalaya_sync_build' })
    local ms = (vim.uv.hrtime() - started) / 1e6
    ok(ms >= 300 and ms < 2000, ('stopped after the grace, in %.0f ms'):format(ms))
    t.wait_for(function()
      return running() == 0
    end, 2000, 'the build and its child to be killed')
    vim.wait(200)
    contains(last()[1], 'building the library', 'no message about a build stopped at exit')
  end)

  it('loads one staged copy of the build, version checked', function()
    local native = require('himalaya.sync.native')
    local lib = assert(native.get())
    eq(require('himalaya.sync.version'), lib.version)
    ok(lib.build_id ~= '')
    eq(native.build_path(), native.source())
    eq(lib, native.get(), 'loaded once')
    local staged = vim.fn.glob(vim.fn.stdpath('cache') .. '/himalaya-sync/libhimalaya_sync-*', false, true)
    eq(1, #staged)
    local ok2, msg = native.reload()
    eq(true, ok2)
    contains(msg, 'already using')
  end)

  it('old require paths lead to the same functions', function()
    local old = 'neotex.plugins.tools.himalaya.sync.'
    eq(require('himalaya.sync.lock').list_locks, require(old .. 'lock').list_locks)
    eq(require('himalaya.sync.oauth').status, require(old .. 'oauth').status)
  end)

  it(':HimalayaSync completes subcommands and rejects unknown ones', function()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local list = vim.fn.getcompletion('HimalayaSync ', 'cmdline')
    ok(
      vim.tbl_contains(list, 'locks') and vim.tbl_contains(list, 'build') and vim.tbl_contains(list, 'version'),
      vim.inspect(list)
    )
    eq({ 'locks' }, vim.fn.getcompletion('HimalayaSync loc', 'cmdline'))
    local seen = t.notifications()
    vim.cmd('HimalayaSync frobnicate')
    contains(seen[1][1], 'unknown subcommand "frobnicate"')
    -- Arguments are split as a Lua command's fargs: `\ ` keeps a space.
    vim.cmd([[HimalayaSync frob\ nicate more]])
    contains(seen[2][1], 'unknown subcommand "frob nicate"')
  end)

  it(':HimalayaSync locks and version print without errors', function()
    vim.cmd('runtime plugin/himalaya-sync.vim')
    local out = vim.api.nvim_exec2('HimalayaSync locks', { output = true }).output
    contains(out, 'Locks in')
    out = vim.api.nvim_exec2('HimalayaSync version', { output = true }).output
    contains(out, 'himalaya-sync ' .. require('himalaya.sync.version'))
  end)
end)

describe('events', function()
  it('a flood from a worker thread arrives complete and in order', function()
    local native = require('himalaya.sync.native')
    local lib = assert(native.get())
    local n, last, in_order = 0, -1, true
    local total = 100000
    local id = assert(lib.emit_test_events(total, 'flood'))
    native.on_id(id, function(ev)
      in_order = in_order and ev.data.seq == last + 1
      last = ev.data.seq
      n = n + 1
    end)
    t.wait_for(function()
      return n == total
    end, 60000, 'all events')
    native.off(id)
    ok(in_order, 'events in order')
    eq(total, n)
  end)
end)
