-- One measurement in a fresh headless Neovim, then exit (bench/bench.py
-- times the whole process from outside). Settings come from the
-- environment: BENCH_MODE, BENCH_OUT (JSON result), BENCH_RC, BENCH_ACCOUNT.
--
--   nvim --headless -u NONE -i NONE -n --cmd 'set rtp^=ROOT' \
--        -c 'runtime plugin/himalaya-sync.vim' -c 'luafile ROOT/bench/fresh.lua'
--
-- Modes:
--   sync  `:HimalayaSync full ACCOUNT` as the first thing this Neovim does
--         (the command loads the library), timed to completion, then :qa!
--   load  the first require('himalaya.sync.lock').list_locks() (library
--         load), then a second call
--   rss   VmRSS before the core is loaded, after, during a sync and after it
--   job   no plugin: `mbsync -c BENCH_RC -a` on a pty through jobstart(), as
--         a user without the plugin could run it, timed to its exit
local uv = vim.uv or vim.loop
local B = dofile(vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h') .. '/lib.lua')

local mode = os.getenv('BENCH_MODE')
local out = assert(os.getenv('BENCH_OUT'), 'BENCH_OUT not set')

local function finish(t)
  B.write_json(out, t)
  vim.schedule(function()
    vim.cmd(t.ok == false and 'cquit 1' or 'qa!')
  end)
end

-- Never hang: a sync that does not end in 5 minutes is a failure.
vim.defer_fn(function()
  finish({ ok = false, error = 'timed out' })
end, 300000)

if mode == 'sync' then
  B.configure(os.getenv('BENCH_RC'))
  B.command_sync(os.getenv('BENCH_ACCOUNT'), function(ms, info, err)
    if not ms then
      return finish({ ok = false, error = err })
    end
    finish({ ok = true, ms = ms, status = info.status, result = info.result, message = info.message })
  end)
elseif mode == 'load' then
  B.configure(os.getenv('BENCH_RC'))
  local lock = require('himalaya.sync.lock')
  local t0 = uv.hrtime()
  local list, err = lock.list_locks()
  local t1 = uv.hrtime()
  lock.list_locks()
  local t2 = uv.hrtime()
  finish({
    ok = err == nil,
    error = err,
    first_ms = (t1 - t0) / 1e6,
    second_ms = (t2 - t1) / 1e6,
    locks = #list,
    loaded = require('himalaya.sync.native').is_loaded(),
  })
elseif mode == 'rss' then
  B.configure(os.getenv('BENCH_RC'))
  local before = B.rss_kb()
  for _, m in ipairs({
    'himalaya.sync',
    'himalaya.sync.manager',
    'himalaya.sync.mbsync',
    'himalaya.sync.lock',
    'himalaya.sync.commands',
  }) do
    require(m)
  end
  require('himalaya.sync.lock').list_locks()
  require('himalaya.sync.manager').list_targets()
  local loaded = B.rss_kb()
  local peak, samples = loaded, 0
  local sampler = assert(uv.new_timer())
  sampler:start(10, 10, function()
    local r = B.rss_kb()
    samples = samples + 1
    if r and r > peak then
      peak = r
    end
  end)
  B.command_sync(os.getenv('BENCH_ACCOUNT'), function(ms, info, err)
    sampler:stop()
    sampler:close()
    if not ms then
      return finish({ ok = false, error = err })
    end
    -- One more loop turn so the sync's last events are processed.
    vim.defer_fn(function()
      finish({
        ok = info.status == 'completed',
        before_kb = before,
        loaded_kb = loaded,
        peak_kb = peak,
        after_kb = B.rss_kb(),
        samples = samples,
        ms = ms,
        result = info.result,
      })
    end, 50)
  end)
elseif mode == 'job' then
  local t0 = uv.hrtime()
  local job = vim.fn.jobstart({ 'mbsync', '-c', os.getenv('BENCH_RC'), '-a' }, {
    pty = true,
    env = { LC_ALL = 'C' },
    on_exit = function(_, code)
      finish({ ok = code == 0, ms = (uv.hrtime() - t0) / 1e6, error = code ~= 0 and ('mbsync exited ' .. code) or nil })
    end,
  })
  if job <= 0 then
    finish({ ok = false, error = 'jobstart failed: ' .. job })
  end
else
  finish({ ok = false, error = 'unknown BENCH_MODE ' .. tostring(mode) })
end
