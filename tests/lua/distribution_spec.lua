-- Installing the checkout the two documented ways, in this spec's throwaway
-- XDG home:
--
-- * lazy.nvim (README): lazy.nvim itself cannot be had here (not on
--   crates.io, PyPI, npm or Debian), so this replays what it does for the
--   README's spec: read the packspec `lazy.lua`, run its `build` in the
--   plugin folder, and for `cmd = 'HimalayaSync'` define a stub command that
--   puts the folder on 'runtimepath', sources its plugin/ files and runs the
--   command again.
-- * LuaRocks (README): `luarocks make` of the rockspec into a private tree
--   (skipped without a luarocks). luarocks-build-rust-mlua is not reachable
--   here either, so a stand-in backend written below does what the real one
--   does under a LuaJIT luarocks: run cargo with the rockspec's options, then
--   copy the library into the rock (luarocks itself installs the
--   command-line tool, from the rockspec's `install.bin`). The cargo it runs is a recorder: the
--   rock's build (`--no-default-features --features luajit`) compiles the
--   same code as `cargo build --release`, but Cargo counts the `default`
--   feature in the crate's fingerprint, so really running it would recompile
--   the crate twice (and replace the build other specs use). The recorded
--   arguments are checked and the existing release build is installed.
--
-- The lazy.nvim build runs the real `cargo build --release` in the
-- checkout, a no-op after `make build`.
local t = require('helpers')
local describe, it, eq, ok, contains = t.describe, t.it, t.eq, t.ok, t.contains

local uv = vim.uv or vim.loop
local LIB = 'libhimalaya_sync'

--- True when the library is mapped into this Neovim.
local function lib_mapped()
  return t.read('/proc/self/maps'):find(LIB, 1, true) ~= nil
end

local function loaded_modules()
  local names = {}
  for name in pairs(package.loaded) do
    if name:match('^himalaya') or name:match('^neotex') then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  return names
end

--- Runs a command to completion; builds may take minutes on a cold target/.
local function sh(cmd, opts)
  return vim.system(cmd, vim.tbl_extend('force', { text = true }, opts or {})):wait(600000)
end

--- Runs a shell-free command line (words split on spaces, as lazy.nvim's
--- string `build` is run in the plugin folder) and fails on a non-zero exit.
local function run_build(cmdline, cwd)
  local r = sh(vim.split(cmdline, ' ', { trimempty = true }), { cwd = cwd })
  ok(r.code == 0, ('`%s` failed (%s):\n%s'):format(cmdline, tostring(r.code), r.stderr or ''))
  return r
end

describe('install with lazy.nvim (its steps replayed)', function()
  local spec

  it('lazy.lua is the packspec the README describes', function()
    spec = dofile(t.root .. '/lazy.lua')
    eq('himalaya-sync.nvim', spec[1])
    eq('cargo build --release', spec.build)
    eq('HimalayaSync', spec.cmd)
  end)

  it('its build command builds the library in the plugin folder', function()
    if vim.fn.executable('cargo') == 0 then
      error('cargo is not on PATH; the build step needs a Rust toolchain')
    end
    run_build(spec.build, t.root)
    ok(uv.fs_stat(t.root .. '/target/release/' .. LIB .. '.so'), 'target/release/' .. LIB .. '.so built')
  end)

  it('nothing loads before the first :HimalayaSync, which loads the plugin and the library', function()
    -- The runner put the checkout on 'runtimepath'; lazy.nvim adds it only
    -- when the plugin loads.
    vim.opt.rtp:remove(t.root)
    eq({}, loaded_modules(), 'no plugin module at startup')
    eq(false, lib_mapped(), 'library not mapped at startup')

    local loads = 0
    vim.api.nvim_create_user_command('HimalayaSync', function(opts)
      loads = loads + 1
      vim.api.nvim_del_user_command('HimalayaSync')
      vim.opt.rtp:prepend(t.root)
      -- As lazy.nvim sources a plugin's plugin/ files: .vim and .lua.
      for _, ext in ipairs({ 'vim', 'lua' }) do
        for _, file in ipairs(vim.fn.glob(t.root .. '/plugin/**/*.' .. ext, false, true)) do
          vim.cmd.source(vim.fn.fnameescape(file))
        end
      end
      vim.cmd('HimalayaSync ' .. opts.args)
    end, { nargs = '*' })

    eq({}, loaded_modules(), 'the stub loads nothing')
    local out = vim.api.nvim_exec2('HimalayaSync version', { output = true }).output
    eq(1, loads)
    local version = require('himalaya.sync.version')
    contains(out, ('himalaya-sync %s, library %s'):format(version, version))
    local native = require('himalaya.sync.native')
    eq('file', native.find().kind)
    eq(native.build_path(), native.source())
    ok(lib_mapped(), 'library mapped after first use')

    -- The real command is in place now: a second call does not go through
    -- the stub.
    out = vim.api.nvim_exec2('HimalayaSync locks', { output = true }).output
    contains(out, 'Locks in')
    eq(1, loads)
  end)

  it('the modules load from the runtimepath', function()
    for _, name in ipairs({
      'himalaya.sync',
      'himalaya.sync.manager',
      'himalaya.sync.lock',
      'himalaya.sync.mbsync',
      'himalaya.sync.oauth',
      'himalaya.sync.auto',
      'himalaya.sync.health',
      'neotex.plugins.tools.himalaya.sync.manager',
    }) do
      local good, mod = pcall(require, name)
      ok(good and type(mod) == 'table', name .. ': ' .. tostring(mod))
    end
    eq(require('himalaya.sync.manager').history, require('neotex.plugins.tools.himalaya.sync.manager').history)
    local got, err = require('himalaya.sync.lock').acquire_lock('distribution', 0)
    eq(true, got, err)
    require('himalaya.sync.lock').release_lock('distribution')
  end)
end)

-- What luarocks-build-rust-mlua runs under a LuaJIT luarocks, reduced to
-- this rockspec's options: cargo with the Lua feature (plus the rockspec's
-- own features, none) and `--no-default-features` when asked, then each
-- module's library copied into the rock's lib folder.
local STAND_IN_BACKEND = [[
local fs = require('luarocks.fs')
local dir = require('luarocks.dir')
local path = require('luarocks.path')
local M = {}
function M.run(rockspec, no_install)
  local b = rockspec.build
  local features = { 'luajit' }
  for _, f in ipairs(b.features or {}) do
    features[#features + 1] = f
  end
  local cmd = 'cargo build --release --target-dir=target'
  if b.default_features == false then
    cmd = cmd .. ' --no-default-features'
  end
  cmd = cmd .. ' --features ' .. table.concat(features, ',')
  io.stdout:write('stand-in rust-mlua: ', cmd, '\n')
  if not fs.execute(cmd) then
    return nil, 'cargo failed'
  end
  if no_install then
    return true
  end
  local libdir = path.lib_dir(rockspec.name, rockspec.version)
  fs.make_dir(libdir)
  for mod, lib in pairs(b.modules) do
    if type(mod) == 'number' then
      mod = lib
    end
    local good, err = fs.copy(dir.path('target', 'release', 'lib' .. lib .. '.so'), dir.path(libdir, mod .. '.so'), 'exec')
    if not good then
      return nil, err
    end
  end
  return true
end
return M
]]

describe('install with LuaRocks', function()
  it('the rockspec lints', function()
    if vim.fn.executable('luarocks') == 0 then
      io.stdout:write('skip: no luarocks (Debian: apt-get install luarocks)\n')
      return
    end
    local r = t.sh({ 'luarocks', 'lint', t.root .. '/himalaya-sync.nvim-scm-1.rockspec' })
    eq(0, r.code, r.stdout .. r.stderr)
  end)

  it('luarocks make installs a rock that Neovim loads from package.cpath', function()
    if vim.fn.executable('luarocks') == 0 then
      io.stdout:write('skip: no luarocks (Debian: apt-get install luarocks)\n')
      return
    end
    local tmp = t.tmpdir()
    local tree = tmp .. '/tree'
    vim.fn.mkdir(tmp .. '/backend/luarocks/build', 'p')
    t.write(tmp .. '/backend/luarocks/build/rust-mlua.lua', STAND_IN_BACKEND)
    vim.fn.mkdir(tmp .. '/bin', 'p')
    t.write(tmp .. '/bin/cargo', ('#!/bin/sh\necho "$@" > %s/cargo-args\n'):format(tmp))
    vim.fn.setfperm(tmp .. '/bin/cargo', 'rwx------')
    local r = sh({
      'luarocks',
      'make',
      '--tree',
      tree,
      '--deps-mode',
      'none',
      'himalaya-sync.nvim-scm-1.rockspec',
    }, {
      cwd = t.root,
      env = { LUA_PATH = tmp .. '/backend/?.lua;;', PATH = tmp .. '/bin:' .. vim.env.PATH },
    })
    eq(0, r.code, r.stdout .. r.stderr)
    eq(
      'build --release --target-dir=target --no-default-features --features luajit',
      vim.trim(t.read(tmp .. '/cargo-args'))
    )

    -- Every Lua module of the checkout is in the rock.
    local share = tree .. '/share/lua/5.1/'
    for _, file in ipairs(vim.fn.glob(t.root .. '/lua/**/*.lua', false, true)) do
      local rel = file:sub(#t.root + #'/lua/' + 1)
      ok(uv.fs_stat(share .. rel), 'rock has ' .. rel)
    end
    local rockdir = tree .. '/lib/luarocks/rocks-5.1/himalaya-sync.nvim/scm-1'
    ok(uv.fs_stat(rockdir .. '/plugin/himalaya-sync.vim'), 'rock has plugin/')
    ok(uv.fs_stat(rockdir .. '/doc/himalaya-sync.txt'), 'rock has doc/')
    -- The command-line tool is in the tree's bin folder, and runs.
    local tool = tree .. '/bin/himalaya-sync'
    local v = t.sh({ tool, 'version' })
    eq(0, v.code, v.stderr)
    contains(v.stdout, require('himalaya.sync.version'))

    -- The README's steps: the tree's Lua folder linked as `lua/` of a
    -- folder on 'runtimepath' (where :checkhealth looks), the help tags.
    vim.fn.mkdir(tree .. '/nvim', 'p')
    ok(uv.fs_symlink('../share/lua/5.1', tree .. '/nvim/lua'), 'link made')
    r = t.sh({
      vim.v.progpath,
      '--headless',
      '-u',
      'NONE',
      '-i',
      'NONE',
      '-n',
      '+helptags ' .. rockdir .. '/doc',
      '+qa!',
    })
    eq(0, r.code, r.stderr)

    -- A fresh Neovim set up as the README says (what a rocks manager does
    -- for its own tree), and not the checkout.
    local script = tmp .. '/check.lua'
    t.write(
      script,
      ([[
local tree, rockdir = %q, %q
package.cpath = tree .. '/lib/lua/5.1/?.so;' .. package.cpath
vim.opt.rtp:append(tree .. '/nvim')
vim.opt.rtp:append(rockdir)
vim.cmd('runtime plugin/himalaya-sync.vim')
local before = package.loaded['himalaya.sync.native'] == nil
local out = vim.api.nvim_exec2('HimalayaSync version', { output = true }).output
local native = require('himalaya.sync.native')
local loc = native.find()
local helped = pcall(vim.cmd, 'help himalaya-sync-config')
local help_file = vim.fn.expand('%%:p')
vim.cmd('checkhealth himalaya.sync')
local health = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\n')
io.stdout:write(vim.json.encode({
  before = before,
  out = out,
  kind = loc.kind,
  path = loc.path,
  source = native.source(),
  tool = native.tool_path(),
  native_file = debug.getinfo(native.find, 'S').source,
  manager = type(require('himalaya.sync.manager')),
  helped = helped,
  help_file = help_file,
  health = health,
}), '\n')
vim.cmd('qa!')
]]):format(tree, rockdir)
    )
    r = t.sh({ vim.v.progpath, '--headless', '-u', 'NONE', '-i', 'NONE', '-n', '-l', script })
    eq(0, r.code, r.stderr)
    local got = vim.json.decode(vim.trim(r.stdout))
    eq(true, got.before, 'nothing loaded before first use')
    eq('rock', got.kind)
    eq(tree .. '/lib/lua/5.1/himalaya_sync.so', got.path)
    eq(got.path, got.source)
    contains(got.native_file, tree .. '/nvim/lua/himalaya/sync/native.lua')
    contains(got.out, 'from ' .. got.path)
    eq('table', got.manager)
    eq(tool, got.tool, 'the engine finds the tool of the rock (the relay of throttled accounts)')
    eq(true, got.helped, ":help finds the rock's help")
    contains(got.help_file, rockdir .. '/doc/himalaya-sync.txt')
    contains(got.health, 'himalaya.sync')
    ok(not got.health:find('No healthcheck found', 1, true), got.health)
    contains(got.health, got.path)
  end)
end)

describe('the help file', function()
  it('parses as vimdoc, its tags are unique, and every |link| resolves', function()
    local lines = vim.fn.readfile(t.root .. '/doc/himalaya-sync.txt')
    -- :helptags fails on a duplicate tag (E154).
    local dir = t.tmpdir() .. '/doc'
    vim.fn.mkdir(dir, 'p')
    vim.fn.writefile(lines, dir .. '/himalaya-sync.txt')
    vim.cmd('helptags ' .. vim.fn.fnameescape(dir))
    local own = {}
    for _, l in ipairs(vim.fn.readfile(dir .. '/tags')) do
      own[l:match('^[^\t]+')] = true
    end
    for n, l in ipairs(lines) do
      ok(vim.fn.strdisplaywidth(l) <= 78 or l:match('^%s+PassCmd '), ('line %d is wider than 78: %s'):format(n, l))
    end
    -- Debian's Neovims come without the vimdoc parser (0.10 raises, later
    -- versions return nil).
    local called, added = pcall(vim.treesitter.language.add, 'vimdoc')
    if not (called and added) then
      return
    end
    local buf = vim.api.nvim_create_buf(false, true)
    t.defer(function()
      vim.api.nvim_buf_delete(buf, { force = true })
    end)
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
    local root = vim.treesitter.get_parser(buf, 'vimdoc'):parse()[1]:root()
    local broken, unknown = {}, {}
    for id, node in
      vim.treesitter.query.parse('vimdoc', '(ERROR) @error (taglink text: (word) @link)'):iter_captures(root, buf)
    do
      if id == 1 then
        broken[#broken + 1] = node:range() + 1
      else
        local link = vim.treesitter.get_node_text(node, buf)
        if not own[link] and not vim.tbl_contains(vim.fn.getcompletion(link, 'help'), link) then
          unknown[#unknown + 1] = link
        end
      end
    end
    eq({}, broken, 'lines where the vimdoc parser fails')
    eq({}, unknown, 'links to no tag')
  end)
end)

describe('make demo', function()
  it('syncs the throwaway account, shows progress and the summary, and leaves nothing behind', function()
    local tmp = t.tmpdir()
    local r = sh({ 'bash', t.root .. '/scripts/demo.sh' }, {
      env = { DEMO_HEADLESS = '1', DEMO_MESSAGES = '300', TMPDIR = tmp },
    })
    local out = (r.stdout or '') .. (r.stderr or '')
    eq(0, r.code, out)
    contains(out, 'Starting a throwaway IMAP server with 300 messages...')
    contains(out, ':HimalayaSync full demo')
    ok(out:find('%[#+%] 100%%  [^\n]+  7/7 folders, 300 messages copied') ~= nil, out)
    ok(out:find('Sync completed in [%d.]+ s: 300 messages pulled, 0 pushed%.') ~= nil, out)
    -- Every folder, the non-ASCII ones too, with as many messages on both sides.
    local rows = 0
    for name, server, here in out:gmatch('\n(%S[^\n]-)%s+(%d+)%s+(%d+)%s+%d+') do
      rows = rows + 1
      eq(server, here, name)
    end
    eq(7, rows, out)
    contains(out, 'Entwürfe')
    eq({}, vim.fn.readdir(tmp), 'the demo left files behind')
  end)
end)
