-- Test runner for the Lua specs, in real headless Neovim.
--
--   nvim --headless -u NONE -i NONE -n -l tests/lua/runner.lua [spec ...]
--
-- With no arguments it runs every tests/lua/*_spec.lua. Each spec file runs
-- in its own Neovim (a fresh process: fresh library state, fresh lock
-- table) with private XDG folders and lock folder, removed afterwards.
-- Two spec files run at a time (HIMALAYA_SPEC_JOBS), the longest first,
-- each printed whole when it ends. The last line is `N passed, N failed`; the exit code is
-- non-zero on failure.
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
  local stop_fixtures = home
    and ('python3 %s stop-all --root %s >/dev/null 2>&1'):format(
      vim.fn.shellescape(root .. '/tests/fixture/imap_fixture.py'),
      vim.fn.shellescape(home)
    )
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
  package.path = root .. '/tests/lua/?.lua;' .. package.path
  local t = require('helpers')
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
---@param filter string?
---@param secrets_file string
local function start_spec(spec, filter, secrets_file)
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
    HIMALAYA_SPEC_FILTER = filter,
    HIMALAYA_SPEC_SECRETS = secrets_file,
  }
  vim.fn.mkdir(env.XDG_RUNTIME_DIR, 'p', tonumber('700', 8))
  vim.fn.mkdir(env.TMPDIR, 'p', tonumber('700', 8))
  local run = { spec = spec, name = vim.fn.fnamemodify(spec, ':t'), home = home, out = {}, errs = {} }
  run.started = uv.hrtime()
  run.proc = vim.system(
    { nvim, '--headless', '-u', 'NONE', '-i', 'NONE', '-n', '-l', debug.getinfo(1, 'S').source:sub(2), '--one', spec },
    {
      env = env,
      text = true,
      stdout = function(_, data)
        run.out[#run.out + 1] = data
      end,
      stderr = function(_, data)
        run.errs[#run.errs + 1] = data
      end,
    },
    function(res)
      run.res = res
    end
  )
  return run
end

-- The specs that take longest, longest first: they start first. Started
-- in name order, the four longest (a minute each) came last, and the last
-- ran alone for most of a minute while the other job had nothing left.
-- Each lane of `make test` (Makefile) leads with its longest. A spec left
-- out of this list, or a list gone stale, only costs time.
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

--- The specs in the order they start: those of LONGEST_FIRST by that list,
--- then the others by name.
---@param specs string[]
---@return string[]
local function in_start_order(specs)
  local rank = {}
  for i, name in ipairs(LONGEST_FIRST) do
    rank[name] = i
  end
  local function key(spec)
    return rank[vim.fn.fnamemodify(spec, ':t')] or #LONGEST_FIRST + 1
  end
  local sorted = vim.deepcopy(specs)
  table.sort(sorted, function(a, b)
    if key(a) ~= key(b) then
      return key(a) < key(b)
    end
    return a < b
  end)
  return sorted
end

local function run_all(specs)
  if #specs == 0 then
    specs = vim.fn.glob(root .. '/tests/lua/*_spec.lua', false, true)
  end
  specs = in_start_order(specs)
  local filter = os.getenv('HIMALAYA_SPEC_FILTER')
  -- Most specs wait on servers, processes and timers much more than they
  -- compute, so two at a time keep this machine's two CPUs busier and take
  -- a little over half as long; each has its own Neovim, folders, servers
  -- and ports. HIMALAYA_SPEC_JOBS=1 runs them one after another. Three at
  -- a time leave these CPUs no slack: the specs that time a watchdog (a
  -- frozen server must be noticed within its limit) then fail now and then.
  local jobs = math.max(1, tonumber(os.getenv('HIMALAYA_SPEC_JOBS') or '') or 2)
  local total_pass, total_fail = 0, 0
  package.path = root .. '/tests/lua/?.lua;' .. package.path
  local helpers = require('helpers')
  -- Output of every spec, and the secrets specs register, live here.
  local suite = vim.fn.tempname() .. '-suite'
  vim.fn.mkdir(suite, 'p', tonumber('700', 8))
  local secrets_file = suite .. '/secrets'
  helpers.write(secrets_file, '')
  local leaks = {}
  -- The names of the tests that ran, to find a filter part that chose none.
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
    for line in vim.gsplit(out, '\n', { plain = true }) do
      ran[#ran + 1] = line:match('^ok   (.*) %(%d+ ms%)$') or line:match('^FAIL (.*)$')
    end
    -- A spec killed at its time limit could not clean up: stop every
    -- server it started before removing its folder.
    vim
      .system({ 'python3', root .. '/tests/fixture/imap_fixture.py', 'stop-all', '--root', run.home }, { text = true })
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

  local next_spec, running = 1, {}
  while next_spec <= #specs or #running > 0 do
    while #running < jobs and next_spec <= #specs do
      running[#running + 1] = start_spec(specs[next_spec], filter, secrets_file)
      next_spec = next_spec + 1
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
  for _, part in ipairs(helpers.filter_parts(filter)) do
    local chose = vim.iter(ran):any(function(name)
      return name:find(part, 1, true) ~= nil
    end)
    if not chose then
      total_fail = total_fail + 1
      io.stdout:write(('\nFAIL HIMALAYA_SPEC_FILTER: no test of these specs is named with %q\n'):format(part))
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
  io.stdout:write(('\n%d passed, %d failed\n'):format(total_pass, total_fail))
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
