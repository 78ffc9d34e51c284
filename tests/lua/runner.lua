-- Test runner for the Lua specs, in real headless Neovim.
--
--   nvim --headless -u NONE -i NONE -n -l tests/lua/runner.lua [--lanes L,...] [spec ...]
--
-- With no arguments it runs every tests/lua/*_spec.lua. Each spec file runs
-- in its own Neovim (a fresh process: fresh library state, fresh lock
-- table) with private XDG folders and lock folder, removed afterwards.
-- Three spec files run at a time (HIMALAYA_SPEC_JOBS), the longest first,
-- each printed whole when it ends. The last line is `N passed, N failed in
-- M min S s`; the exit code is non-zero on failure.
--
-- Lanes (see LANES) run specs with other versions: `main` (the default)
-- with this Neovim and the mbsync on PATH, the others with a Neovim or an
-- isync of .deps/. `make test` runs every lane in one queue, so that no
-- lane waits for the last spec of the one before it with a CPU idle; a
-- spec file never runs in two lanes at once.
--
-- Secret check: after each spec, its output (stdout and stderr), the files
-- in its XDG folders (engine log, history, locks) and the notifications it
-- showed are searched for every test secret (helpers.SECRETS, plus those a
-- spec registered with helpers.secret()). A hit fails the run and is listed
-- as file:line; the files are kept for a look.
local uv = vim.uv or vim.loop
local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h:h')
local nvim = vim.v.progpath
local SPEC_TIMEOUT_MS = tonumber(os.getenv('HIMALAYA_SPEC_TIMEOUT_MS') or '') or 240000

local function run_one(spec)
  -- When the runner is killed (a timeout around `make`), this spec's Neovim
  -- must not live on as an orphan: it exits once its parent is gone.
  local parent = uv.os_getppid()
  local home = os.getenv('HIMALAYA_SPEC_HOME')
  -- Built here: Vimscript functions cannot run in a timer callback.
  package.path = root .. '/tests/lua/?.lua;' .. package.path
  local t = require('helpers')
  local stop_fixtures = home
    and t.python_sh(root .. '/tests/fixture/imap_fixture.py', 'stop-all', '--root', home) .. ' >/dev/null 2>&1'
  local watch = assert(uv.new_timer())
  watch:start(1000, 1000, function()
    if uv.os_getppid() ~= parent then
      if stop_fixtures then
        os.execute(stop_fixtures)
      end
      os.exit(2)
    end
  end)
  watch:unref()
  vim.opt.rtp:prepend(root)
  vim.opt.packpath = ''
  t.root = root
  local home = os.getenv('HIMALAYA_SPEC_HOME')
  if home then
    t.record_notifications(home .. '/notifications.log')
  end
  local ok, err = pcall(dofile, spec)
  if not ok then
    t.record_load_error(spec, err)
  end
  local passed, failed = t.run_all()
  if home then
    -- Messages shown some other way than vim.notify (or while a spec had
    -- replaced it) are in :messages.
    local f = io.open(home .. '/notifications.log', 'a')
    if f then
      f:write(vim.api.nvim_exec2('messages', { output = true }).output, '\n')
      f:close()
    end
  end
  io.stdout:write(('%d passed, %d failed\n'):format(passed, failed))
  io.stdout:flush()
  -- Exit through :qa so VimLeavePre (and the library's shutdown) runs, as
  -- it would for a user.
  vim.cmd(failed == 0 and 'qa!' or 'cquit 1')
end

--- Starts one spec file's Neovim with its private folders; `done` is set
--- when it exits. Its output is kept, not printed: specs run side by side.
---@param spec string
---@param lane himalaya.test.Lane
---@param secrets_file string
local function start_spec(spec, lane, secrets_file)
  -- Right under TMPDIR, not in Neovim's own temp folder (two levels more,
  -- nvim.USER/XXXXXX): the IMAP fixture wants its folder's path short
  -- (dovecot's socket paths), and scripts/test-tmpdir.sh's TMPDIR is
  -- longer than /tmp.
  local home = assert(uv.fs_mkdtemp((os.getenv('TMPDIR') or '/tmp') .. '/spec-XXXXXX'))
  local env = {
    XDG_STATE_HOME = home .. '/state',
    XDG_CACHE_HOME = home .. '/cache',
    XDG_CONFIG_HOME = home .. '/config',
    XDG_DATA_HOME = home .. '/data',
    XDG_RUNTIME_DIR = home .. '/run',
    -- Neovim's own temp folder too: one killed on purpose cannot remove it.
    TMPDIR = home .. '/tmp',
    HIMALAYA_SPEC_HOME = home,
    HIMALAYA_SPEC_FILTER = lane.filter,
    HIMALAYA_SPEC_SECRETS = secrets_file,
    HIMALAYA_PYTHON = require('helpers').python()[1],
  }
  for k, v in pairs(lane.env) do
    env[k] = v
  end
  vim.fn.mkdir(env.XDG_RUNTIME_DIR, 'p', tonumber('700', 8))
  vim.fn.mkdir(env.TMPDIR, 'p', tonumber('700', 8))
  local file = vim.fn.fnamemodify(spec, ':t')
  local run = {
    spec = spec,
    lane = lane,
    name = lane.name == 'main' and file or ('%s %s'):format(lane.name, file),
    home = home,
    out = {},
    errs = {},
  }
  run.started = uv.hrtime()
  run.proc = vim.system({
    lane.nvim,
    '--headless',
    '-u',
    'NONE',
    '-i',
    'NONE',
    '-n',
    '-l',
    debug.getinfo(1, 'S').source:sub(2),
    '--one',
    spec,
  }, {
    env = env,
    text = true,
    stdout = function(_, data)
      run.out[#run.out + 1] = data
    end,
    stderr = function(_, data)
      run.errs[#run.errs + 1] = data
    end,
  }, function(res)
    run.res = res
  end)
  return run
end

-- The specs that take longest, longest first: they start first. Started
-- in name order, the four longest (a minute each) came last, and the last
-- ran alone for most of a minute while the other job had nothing left.
-- A spec left out of this list, or a list gone stale, only costs time.
local LONGEST_FIRST = {
  'soak_spec.lua',
  'queue_spec.lua',
  'repair_spec.lua',
  'oauth_spec.lua',
  'sync_spec.lua',
  'check_spec.lua',
  'faults_spec.lua',
  'auto_spec.lua',
  'lifecycle_spec.lua',
  'loader_spec.lua',
  'idle_election_spec.lua',
}

---@class himalaya.test.Lane
---@field name string
---@field nvim string the Neovim that runs its specs
---@field env table<string, string> set for its specs
---@field specs string[]
---@field filter? string HIMALAYA_SPEC_FILTER for its specs
---@field version? string[] the command that prints the version it runs with

--- The words of environment variable `name` (set by the Makefile).
---@param name string
---@return string[]
local function words(name)
  return vim.split(vim.trim(os.getenv(name) or ''), '%s+', { trimempty = true })
end

--- `specs`, or every spec when it is empty, as absolute paths: the queue
--- tells two runs of one spec file apart by path, and the Makefile names
--- them relative to the checkout while the glob gives absolute ones (so
--- loader_spec ran in two lanes at once, and each found the other's
--- processes).
---@param specs string[]
---@return string[]
local function or_all(specs)
  local chosen = #specs > 0 and specs or vim.fn.glob(root .. '/tests/lua/*_spec.lua', false, true)
  return vim.tbl_map(function(spec)
    return vim.fn.fnamemodify(spec, ':p')
  end, chosen)
end

--- The lanes: `main`, and the other versions of Neovim and isync that
--- scripts/install-other-versions.sh unpacks into .deps/. Which specs and
--- tests those run is the Makefile's (SPECS_OTHER, SPECS_MBSYNC,
--- TESTS_MBSYNC, passed as HIMALAYA_SPECS_OTHER and so on).
---@param name string
---@param specs string[] the command line's specs, for `main`
---@return himalaya.test.Lane?
local function lane_named(name, specs)
  local dir = root .. '/.deps/' .. name
  if name == 'main' then
    local filter = os.getenv('HIMALAYA_SPEC_FILTER')
    return { name = name, nvim = nvim, env = {}, specs = or_all(specs), filter = filter }
  elseif name == 'nvim-oldest' or name == 'nvim-newest' then
    local bin = dir .. '/bin/nvim'
    return {
      name = name,
      nvim = bin,
      env = { VIMRUNTIME = dir .. '/runtime' },
      specs = or_all(words('HIMALAYA_SPECS_OTHER')),
      filter = os.getenv('HIMALAYA_SPEC_FILTER'),
      version = { bin, '--version' },
    }
  elseif name == 'isync-1.3' or name == 'isync-1.5' then
    local filter = os.getenv('HIMALAYA_TESTS_MBSYNC') or ''
    return {
      name = name,
      nvim = nvim,
      env = { PATH = dir .. '/bin:' .. os.getenv('PATH') },
      -- Without a filter, every test of every spec.
      specs = or_all(filter ~= '' and words('HIMALAYA_SPECS_MBSYNC') or {}),
      filter = filter,
      version = { dir .. '/bin/mbsync', '--version' },
    }
  end
end

--- Every spec of every lane, in the order they start: those of
--- LONGEST_FIRST by that list (each lane's one after another), then the
--- others by name; a lane that runs chosen tests only is short whatever
--- its specs, and comes last, to fill the end.
---@param lanes himalaya.test.Lane[]
---@return {spec: string, lane: himalaya.test.Lane}[]
local function in_start_order(lanes)
  local rank = {}
  for i, name in ipairs(LONGEST_FIRST) do
    rank[name] = i
  end
  local runs = {}
  for i, lane in ipairs(lanes) do
    local chosen = lane.filter and lane.filter ~= ''
    for _, spec in ipairs(lane.specs) do
      local r = rank[vim.fn.fnamemodify(spec, ':t')] or #LONGEST_FIRST + 1
      runs[#runs + 1] = { spec = spec, lane = lane, key = { chosen and 1 or 0, r, spec, i } }
    end
  end
  table.sort(runs, function(a, b)
    for k = 1, 4 do
      if a.key[k] ~= b.key[k] then
        return a.key[k] < b.key[k]
      end
    end
    return false
  end)
  return runs
end

local function run_all(args)
  local began = uv.hrtime()
  local names, specs = { 'main' }, {}
  for i, a in ipairs(args) do
    if a == '--lanes' then
      names = vim.split(args[i + 1] or '', ',', { trimempty = true })
    elseif args[i - 1] ~= '--lanes' then
      specs[#specs + 1] = a
    end
  end
  local lanes = {}
  for _, name in ipairs(names) do
    local lane = lane_named(name, specs)
    if not lane then
      io.stderr:write(('runner: unknown lane %q (main, nvim-oldest, nvim-newest, isync-1.3, isync-1.5)\n'):format(name))
      os.exit(2)
    end
    if lane.version then
      local v = vim.system(lane.version, { env = lane.env, text = true }):wait()
      io.stdout:write(('== lane %s: %s\n'):format(name, vim.split(v.stdout or '', '\n')[1]))
    end
    lanes[#lanes + 1] = lane
  end
  local runs = in_start_order(lanes)
  -- Most specs wait on servers, processes and timers much more than they
  -- compute: two at a time kept 0.8 of this machine's two CPUs busy on
  -- average, and took 5 min 21 s for every lane; three keep 1.0 busy and
  -- take 4 min to 4 min 24 s. Each has its own Neovim, folders, servers
  -- and ports. HIMALAYA_SPEC_JOBS=1 runs them one after another. (Three
  -- once made the specs that time a watchdog fail now and then; those runs
  -- also started pyenv's Python shim for every fixture command, which cost
  -- more CPU than the fixture itself.)
  local jobs = math.max(1, tonumber(os.getenv('HIMALAYA_SPEC_JOBS') or '') or 3)
  local total_pass, total_fail = 0, 0
  package.path = root .. '/tests/lua/?.lua;' .. package.path
  local helpers = require('helpers')
  -- Output of every spec, and the secrets specs register, live here.
  local suite = vim.fn.tempname() .. '-suite'
  vim.fn.mkdir(suite, 'p', tonumber('700', 8))
  local secrets_file = suite .. '/secrets'
  helpers.write(secrets_file, '')
  local leaks = {}
  -- The names of the tests that ran per lane, to find a filter part that
  -- chose none.
  ---@type table<himalaya.test.Lane, string[]>
  local ran = {}

  ---@param run table
  local function finish(run)
    local res = run.res
    local secs = (uv.hrtime() - run.started) / 1e9
    local name = run.name
    local out = table.concat(run.out)
    io.stdout:write(('\n== %s\n%s%s'):format(name, out, out:sub(-1) == '\n' and '' or '\n'))
    io.stdout:flush()
    local errs = table.concat(run.errs)
    if errs ~= '' then
      io.stderr:write(errs, errs:sub(-1) == '\n' and '' or '\n')
    end
    -- Collect the child's own summary from what it printed.
    local p, f = 0, 0
    for a, b in out:gmatch('(%d+) passed, (%d+) failed') do
      p, f = tonumber(a), tonumber(b)
    end
    if res.code ~= 0 and f == 0 then
      f = 1
      local why = run.timed_out and ('its %d s limit'):format(SPEC_TIMEOUT_MS / 1000)
        or ('code %s (signal %s)'):format(res.code, res.signal)
      io.stdout:write(('FAIL %s: Neovim stopped by %s after %.1f s\n'):format(name, why, secs))
    end
    total_pass, total_fail = total_pass + p, total_fail + f
    ran[run.lane] = ran[run.lane] or {}
    for line in vim.gsplit(out, '\n', { plain = true }) do
      table.insert(ran[run.lane], line:match('^ok   (.*) %(%d+ ms%)$') or line:match('^FAIL (.*)$'))
    end
    -- A spec killed at its time limit could not clean up: stop every
    -- server it started before removing its folder.
    vim
      .system(helpers.python(root .. '/tests/fixture/imap_fixture.py', 'stop-all', '--root', run.home), { text = true })
      :wait(30000)
    io.stdout:write(('-- %s: %.1f s\n'):format(name, secs))
    io.stdout:flush()
    helpers.write(('%s/%s.stdout'):format(suite, name), out)
    helpers.write(('%s/%s.stderr'):format(suite, name), errs)
    local scan =
      { suite .. '/' .. name .. '.stdout', suite .. '/' .. name .. '.stderr', run.home .. '/notifications.log' }
    for _, d in ipairs({ 'state', 'cache', 'config', 'data', 'run' }) do
      scan[#scan + 1] = run.home .. '/' .. d
    end
    local hits = helpers.find_secrets(helpers.all_secrets(secrets_file), scan)
    if #hits == 0 then
      vim.fn.delete(run.home, 'rf')
    end
    vim.list_extend(leaks, hits)
  end

  --- The first run waiting whose spec file no lane runs now (some specs
  --- use the checkout itself: loader_spec builds in its target folder),
  --- taken out of `runs`.
  local function next_run(running)
    for i, r in ipairs(runs) do
      local busy = vim.iter(running):any(function(other)
        return other.spec == r.spec
      end)
      if not busy then
        return table.remove(runs, i)
      end
    end
  end
  local running = {}
  while #runs > 0 or #running > 0 do
    while #running < jobs do
      local r = next_run(running)
      if not r then
        break
      end
      running[#running + 1] = start_spec(r.spec, r.lane, secrets_file)
    end
    vim.wait(1000, function()
      for _, run in ipairs(running) do
        if run.res then
          return true
        end
      end
      return false
    end, 20)
    for i = #running, 1, -1 do
      local run = running[i]
      if not run.res and (uv.hrtime() - run.started) / 1e6 > SPEC_TIMEOUT_MS then
        run.timed_out = true
        run.proc:kill('sigkill')
        run.res = run.proc:wait()
      end
      if run.res then
        -- wait() returns once the output pipes are drained too.
        run.proc:wait()
        table.remove(running, i)
        finish(run)
      end
    end
  end
  -- A renamed test must not drop out of a lane that chooses it by name.
  for _, lane in ipairs(lanes) do
    for _, part in ipairs(helpers.filter_parts(lane.filter)) do
      local chose = vim.iter(ran[lane] or {}):any(function(name)
        return name:find(part, 1, true) ~= nil
      end)
      if not chose then
        total_fail = total_fail + 1
        io.stdout:write(('\nFAIL %s lane: no test of its specs is named with %q\n'):format(lane.name, part))
      end
    end
  end
  if #leaks > 0 then
    total_fail = total_fail + 1
    io.stdout:write('\nFAIL secret check: a test secret appears in what the suite produced (files kept):\n')
    for _, l in ipairs(leaks) do
      io.stdout:write('     ' .. l .. '\n')
    end
  else
    local n = #helpers.all_secrets(secrets_file)
    io.stdout:write(
      ('\nsecret check: none of %d test secrets appears in the output, logs or notifications\n'):format(n)
    )
    vim.fn.delete(suite, 'rf')
  end
  local secs = (uv.hrtime() - began) / 1e9
  io.stdout:write(
    ('\n%d passed, %d failed in %d min %d s\n'):format(
      total_pass,
      total_fail,
      math.floor(secs / 60),
      math.floor(secs % 60)
    )
  )
  io.stdout:flush()
  -- Through :qa, not os.exit: Neovim then removes its own temp folder.
  vim.cmd(total_fail == 0 and 'qa!' or 'cquit 1')
end

local args = _G.arg or {}
if args[1] == '--one' then
  run_one(args[2])
else
  run_all(args)
end
