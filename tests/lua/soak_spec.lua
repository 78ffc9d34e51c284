-- Soak: 8 contenders (5 headless Neovims and 3 loops of the command-line
-- tool) ask for syncs of ONE account for 60 s while new mail arrives. The
-- mbsync command is a wrapper that logs when each real mbsync starts and
-- ends, so "never two mbsync on the account at once" is proven from the
-- real processes; every contender logs its requests and answers, so "no
-- deadlock, every request answered" is too.
local t = require('helpers')
local describe, it, eq, ok = t.describe, t.it, t.eq, t.ok

local uv = vim.uv or vim.loop

local SECONDS = tonumber(os.getenv('HIMALAYA_SOAK_SECONDS') or '') or 60
local NEOVIMS = 5
local LOOPS = 3

--- A contender Neovim: syncs demo in a loop until `deadline` (unix
--- seconds), logging `request NS` and `answer NS STATUS KIND` lines.
local function neovim_script(rc, wrapper, log, deadline)
  return ([[
vim.opt.rtp:prepend(%q)
vim.g.himalaya_sync = {
  mbsync = { config = %q, cmd = %q, timeout = 60 },
  notify = false,
  retry = { max_attempts = 0 },
}
local manager = require('himalaya.sync.manager')
local log = assert(io.open(%q, 'a'))
log:setvbuf('line')
local function ns()
  return string.format('%%d', vim.uv.hrtime())
end
math.randomseed(vim.fn.getpid())
while os.time() < %d do
  local done
  log:write('request ', ns(), '\n')
  local id, err, kind = manager.start_sync('full', {
    account = 'demo',
    wait = 90,
    on_complete = function(result, info) done = { info.status, result.kind or '-' } end,
  })
  if not id then
    done = { 'refused', (kind or '?') .. ':' .. tostring(err):gsub('%%s', '_') }
  end
  vim.wait(120000, function() return done ~= nil end, 5)
  log:write('answer ', ns(), ' ', done and done[1] or 'none', ' ', done and done[2] or '-', '\n')
  vim.wait(math.random(0, 40))
end
log:close()
vim.cmd('qa!')
]]):format(t.root, rc, wrapper, log, deadline)
end

--- A contender loop of `himalaya-sync sync` (bash), mbsync from PATH.
local function loop_script(rc, log, deadline)
  return ([[
deadline=%d
while [ "$(date +%%s)" -lt "$deadline" ]; do
  echo "request $(date +%%s%%N)" >> %s
  out=$(%s sync demo full -c %s -t 90 2>&1)
  rc=$?
  echo "answer $(date +%%s%%N) $([ $rc = 0 ] && echo completed || echo failed) $rc $(echo "$out" | tr ' \n' '__')" >> %s
done
]]):format(
    deadline,
    vim.fn.shellescape(log),
    vim.fn.shellescape(t.root .. '/target/release/himalaya-sync'),
    vim.fn.shellescape(rc),
    vim.fn.shellescape(log)
  )
end

--- Requests and answers in a contender log.
local function read_log(path)
  local requests, answers, bad = 0, 0, {}
  local f = io.open(path)
  if not f then
    return 0, 0, { 'no log' }
  end
  for line in f:lines() do
    local what, _, status, rest = line:match('^(%a+) (%d+) ?(%S*) ?(.*)$')
    if what == 'request' then
      requests = requests + 1
    elseif what == 'answer' then
      answers = answers + 1
      if status ~= 'completed' then
        bad[#bad + 1] = status .. ' ' .. rest
      end
    end
  end
  f:close()
  return requests, answers, bad
end

describe('soak', function()
  it(
    ('%d contenders sync one account for %d s: never two mbsync at once, every request answered'):format(
      NEOVIMS + LOOPS,
      SECONDS
    ),
    function()
      local cli = t.root .. '/target/release/himalaya-sync'
      ok(vim.fn.executable(cli) == 1, 'cargo build --release made ' .. cli)
      local fx = t.fixture({ '--messages', '30' })
      local dir = t.tmpdir()
      local runs_log = dir .. '/mbsync-runs.log'
      local wrapper = t.mbsync_wrapper(runs_log)
      -- The real mbsync, not its wrapper (whose command line is sh's).
      local real = vim.fn.exepath('mbsync') .. ' '
      local most = t.watch_processes(function(cmd)
        return vim.startswith(cmd, real) and cmd:find(fx.mbsyncrc, 1, true) ~= nil
      end)
      local deadline = os.time() + SECONDS
      local procs, logs = {}, {}
      t.defer(function()
        -- Whatever is left: the contenders, then any mbsync on this account.
        for _, p in ipairs(procs) do
          vim.system({ 'pkill', '-9', '-P', tostring(p.pid) }):wait()
          pcall(p.kill, p, 9)
        end
        for _, pid in ipairs(t.pgrep('mbsync .*' .. fx.mbsyncrc)) do
          uv.kill(pid, 9)
        end
      end)
      local started = uv.hrtime()
      for i = 1, NEOVIMS do
        local log = ('%s/nvim-%d.log'):format(dir, i)
        local script = ('%s/nvim-%d.lua'):format(dir, i)
        t.write(script, neovim_script(fx.mbsyncrc, wrapper, log, deadline))
        logs[#logs + 1] = log
        procs[#procs + 1] = vim.system(
          { vim.v.progpath, '--headless', '-u', 'NONE', '-i', 'NONE', '-n', '-l', script },
          -- stderr kept: a Lua error in a contender is the failure's message.
          { stdout = false, text = true }
        )
      end
      for i = 1, LOOPS do
        local log = ('%s/cli-%d.log'):format(dir, i)
        logs[#logs + 1] = log
        procs[#procs + 1] = vim.system({ 'bash', '-c', loop_script(fx.mbsyncrc, log, deadline) }, {
          env = { PATH = vim.fs.dirname(wrapper) .. ':' .. os.getenv('PATH') },
          stdout = false,
          stderr = false,
        })
      end
      -- New mail keeps arriving while they contend.
      local delivered = 0
      while os.time() < deadline do
        fx.deliver('demo', delivered % 2 == 0 and 'INBOX' or 'Work', 1)
        delivered = delivered + 1
        vim.wait(2000)
      end
      -- No deadlock: everyone ends soon after the deadline.
      for i, p in ipairs(procs) do
        local res = p:wait(60000)
        eq(0, res.code, ('contender %d (%s) exit code; stderr: %s'):format(i, logs[i], res.stderr or ''))
      end
      local secs = (uv.hrtime() - started) / 1e9
      ok(secs < SECONDS + 45, ('all contenders ended %.0f s after the start'):format(secs))

      local total = 0
      for _, log in ipairs(logs) do
        local requests, answers, bad = read_log(log)
        ok(requests >= 1, log .. ': made requests')
        eq(requests, answers, log .. ': every request answered')
        eq({}, bad, log .. ': every answer a completed sync')
        total = total + requests
      end
      local runs, overlaps = t.mbsync_runs(runs_log)
      eq({}, overlaps, 'never two mbsync on the account at once')
      for _, r in ipairs(runs) do
        ok(r.stop, ('mbsync %d ended'):format(r.pid))
        eq(0, r.rc, ('mbsync %d exit code'):format(r.pid))
      end
      ok(#runs >= 20, ('mbsync ran %d times'):format(#runs))
      -- One, not zero: the watcher saw the runs it vouches for.
      eq(1, most(), 'the most mbsync processes seen at once')
      -- A wrapper that logged its end may still be exiting: give it a moment.
      t.wait_for(function()
        return #t.pgrep('mbsync .*' .. fx.mbsyncrc) == 0
      end, 5000, 'no mbsync left')
      io.stdout:write(
        ('     %d requests, %d mbsync runs, %d messages delivered in %.0f s\n'):format(total, #runs, delivered, secs)
      )

      -- Nothing lost, nothing twice, after one last sync for the last mail.
      t.use(fx.mbsyncrc)
      local result = t.sync_and_wait('full', { account = 'demo', wait = 30 })
      eq(true, result.success, result.error)
      local server = fx.ids('demo', 'server')
      eq(server, fx.ids('demo', 'local'), 'local Message-IDs equal the server ones')
      local n = 0
      for _, ids in pairs(server) do
        n = n + #ids
      end
      eq(30 + delivered, n, 'every message, once')
    end
  )
end)
