-- Neovim side of `make demo` (see demo.sh): syncs the throwaway account
-- "demo" with :HimalayaSync full demo and shows what a user would see.
local root = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h:h')
vim.opt.rtp:prepend(root)
vim.cmd('runtime plugin/himalaya-sync.vim')

local fixture = vim.json.decode(table.concat(vim.fn.readfile(os.getenv('HIMALAYA_DEMO_FIXTURE')), '\n'))
vim.g.himalaya_sync = { mbsync = { config = fixture.mbsyncrc }, notify = false }
local headless = #vim.api.nvim_list_uis() == 0
local manager = require('himalaya.sync.manager')

local function out(line)
  if headless then
    io.stdout:write(line .. '\n')
    io.stdout:flush()
  end
end

--- Per-folder counts of one side, read from the Maildirs by the fixture
--- (it decodes the modified-UTF-7 folder names mbsync 1.4 keeps on disk).
local function counts(side)
  local r = vim
    .system({
      'python3',
      root .. '/tests/fixture/imap_fixture.py',
      'counts',
      '--dir',
      fixture.dir,
      '--account',
      'demo',
      '--side',
      side,
    }, { text = true })
    :wait()
  if r.code ~= 0 then
    error(('reading the %s folders failed: %s'):format(side, vim.trim(r.stderr or '')))
  end
  return vim.json.decode(r.stdout)
end

local lines = {}
local function show(text)
  lines = vim.split(text, '\n')
  if headless then
    return
  end
  local buf = vim.api.nvim_get_current_buf()
  vim.bo[buf].modifiable = true
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.cmd.redraw()
end

local function bar(pct)
  local width = 40
  local filled = math.floor(width * pct / 100 + 0.5)
  return ('[%s%s] %3d%%'):format(('#'):rep(filled), ('.'):rep(width - filled), pct)
end

--- The sync's end was handled.
local finished = false
--- Headless: the demo's exit code, once it is over.
---@type integer?
local exit_code
--- The progress line shown last: an update that does not change it (the
--- sync's end, a status change) prints nothing new.
local last_line
if headless then
  -- Messages go to the terminal; an error before the sync starts ends the demo.
  vim.notify = function(msg, level)
    out(msg)
    if level == vim.log.levels.ERROR and not finished then
      finished = true
      exit_code = 1
    end
  end
end
--- Prints (once) and returns the progress line of `p`.
---@param p table the sync's progress
---@return string
local function progress(p)
  -- Before mbsync has listed the folders there is nothing to count yet.
  -- Messages are counted as copied, with no total: mbsync's grows as it
  -- opens each folder, so "done/total" would read 1091/1091 at 14%.
  local line = p.boxes.total == 0 and (bar(0) .. '  connecting to the server')
    or ('%s  %s  %d/%d folders, %d messages copied'):format(
      bar(math.floor(p.percent or 0)),
      p.box or '',
      p.boxes.done,
      p.boxes.total,
      p.near.new.done
    )
  if line ~= last_line then
    last_line = line
    out(line)
  end
  return line
end

--- Prints the end of the sync: its last progress, the result and the
--- folders on both sides.
---@param info table the finished sync
local function summary(info)
  -- A short sync may end before its last progress was drawn.
  if info.progress then
    progress(info.progress)
  end
  local r = info.result
  local report = {
    ('Sync %s in %.2f s: %d messages pulled, %d pushed.'):format(info.status, r.duration, r.pulled, r.pushed),
  }
  if not r.success then
    report[#report + 1] = 'Error: ' .. (r.error or '?')
  end
  report[#report + 1] = ''
  report[#report + 1] = ('%-24s %8s %8s %8s'):format('folder', 'server', 'local', 'unread')
  local server, localside = counts('server'), counts('local')
  local names = vim.tbl_keys(server)
  table.sort(names)
  for _, f in ipairs(names) do
    local c = localside[f] or { total = 0, unread = 0 }
    -- Padded by display width: %-24s counts bytes, and folder names are UTF-8.
    local name = f .. (' '):rep(math.max(0, 24 - vim.fn.strdisplaywidth(f)))
    report[#report + 1] = ('%s %8d %8d %8d'):format(name, server[f].total, c.total, c.unread)
  end
  if not headless then
    report[#report + 1] = ''
    report[#report + 1] = 'Press q to quit (the demo server and files are removed).'
  end
  local text = table.concat(report, '\n')
  out('\n' .. text)
  show(text)
end

vim.api.nvim_create_autocmd('User', {
  pattern = 'HimalayaSyncUpdate',
  callback = function(ev)
    local info = ev.data
    if info.status == 'running' and info.progress then
      show('Syncing account "demo" with :HimalayaSync full demo\n\n' .. progress(info.progress))
    elseif info.status ~= 'running' and info.result and not finished then
      finished = true
      local shown_ok, why = pcall(summary, info)
      if not shown_ok then
        out('himalaya-sync demo: cannot show the summary: ' .. tostring(why))
      end
      exit_code = (shown_ok and info.result.success) and 0 or 1
    end
  end,
})

if not headless then
  vim.keymap.set('n', 'q', '<cmd>qa!<cr>')
  vim.o.laststatus = 2
  vim.o.statusline = ' himalaya-sync demo %=%{v:lua.require("himalaya.sync.manager").get_sync_info().status} '
end
out(':HimalayaSync full demo')
vim.cmd('HimalayaSync full demo')
if headless then
  -- Keep the event loop running until the sync reports its end.
  vim.wait(600000, function()
    return exit_code ~= nil
  end, 50)
  vim.cmd(exit_code == 0 and 'qa!' or 'cquit 1')
end
