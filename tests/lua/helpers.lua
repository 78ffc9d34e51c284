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

function M.record_load_error(spec, err)
  load_errors[#load_errors + 1] = ('%s: %s'):format(spec, err)
end

function M.run_all()
  local passed, failed = 0, #load_errors
  for _, e in ipairs(load_errors) do
    io.stdout:write('FAIL (load) ' .. e .. '\n')
  end
  local filter = os.getenv('HIMALAYA_SPEC_FILTER')
  for _, t in ipairs(tests) do
    if not filter or filter == '' or t.name:find(filter, 1, true) then
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

--- A private temp folder removed after the test.
function M.tmpdir()
  local d = vim.fn.tempname() .. '-t'
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
  end
  M.defer(h.stop)
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

return M
