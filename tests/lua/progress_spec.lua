-- The native progress message of a sync on Neovim 0.12 and later
-- (`nvim_echo` with kind "progress", seen through the Progress event), and
-- cancelling a sync by setting that message's status to `cancel`, as a
-- progress UI does. On older Neovims: no such message, and the sync is
-- reported as before.
local t = require('helpers')
local describe, it, eq, ok = t.describe, t.it, t.eq, t.ok

local native = vim.fn.has('nvim-0.12') == 1

--- True (and says so) on a Neovim without progress messages.
local function skipped()
  if not native then
    io.stdout:write('skip: Neovim before 0.12 has no progress messages\n')
  end
  return not native
end

--- Calls `fn` with the data of each Progress event of himalaya-sync's
--- messages (or only the first, `once`) until the test ends.
local function on_progress(fn, once)
  local au = vim.api.nvim_create_autocmd('Progress', {
    pattern = 'himalaya-sync',
    once = once,
    callback = function(ev)
      fn(ev.data)
    end,
  })
  t.defer(function()
    pcall(vim.api.nvim_del_autocmd, au)
  end)
end

--- Collects the Progress events of himalaya-sync's messages (0.12+).
local function watch_progress()
  local events = {}
  if native then
    on_progress(function(data)
      events[#events + 1] = vim.deepcopy(data)
    end)
  end
  return events
end

local function use(mbsyncrc, extra)
  vim.g.himalaya_sync = vim.tbl_deep_extend('force', { mbsync = { config = mbsyncrc } }, extra or {})
  t.defer(function()
    vim.g.himalaya_sync = nil
  end)
end

describe('native progress message', function()
  it('once shown, it is ended even when notifications were turned off meanwhile', function()
    if skipped() then
      return
    end
    local fx = t.fixture({ '--folders', 'INBOX=400,Work=200' })
    use(fx.mbsyncrc)
    local events = watch_progress()
    on_progress(function()
      vim.g.himalaya_sync = { mbsync = { config = fx.mbsyncrc }, notify = { enabled = false } }
    end, true)
    local result = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq('running', events[1].status)
    eq('success', events[#events].status)
    eq(events[1].id, events[#events].id)
  end)

  it('a sync has one progress message, from running to success at 100 %', function()
    local fx = t.fixture({ '--folders', 'INBOX=400,Work=200' })
    use(fx.mbsyncrc)
    local events = watch_progress()
    local result, info = t.sync_and_wait('full', { account = 'demo' })
    eq(true, result.success, result.error)
    eq('completed', info.status)
    if skipped() then
      eq({}, events)
      return
    end
    ok(#events >= 2, vim.inspect(events))
    for i, ev in ipairs(events) do
      eq(events[1].id, ev.id, 'one message for the whole sync')
      eq('himalaya-sync', ev.source)
      eq('himalaya-sync', ev.title)
      if i > 1 then
        ok((ev.percent or 0) >= (events[i - 1].percent or 0), 'percent never goes back')
      end
    end
    eq('running', events[1].status)
    eq('success', events[#events].status)
    eq(100, events[#events].percent)
  end)

  it('a sync that waits for another process says so in its progress message', function()
    local fx = t.fixture({ '--folders', 'INBOX=20' })
    use(fx.mbsyncrc)
    local holder = t.hold_plugin_lock('sync-demo', 60)
    local events = watch_progress()
    local done
    assert(require('himalaya.sync.manager').start_sync('full', {
      account = 'demo',
      wait = 30,
      on_complete = function(r)
        done = r
      end,
    }))
    if native then
      t.wait_for(function()
        return #events > 0
      end, 5000, 'the progress message')
    end
    holder.stop()
    t.wait_for(function()
      return done ~= nil
    end, 30000, 'the sync')
    eq(true, done.success, done.error)
    if skipped() then
      eq({}, events)
      return
    end
    t.contains(
      events[1].text[1],
      'waiting for another process to finish syncing demo: lock "sync-demo" is held by pid '
    )
    eq('running', events[1].status)
    eq({ 'syncing demo' }, events[2].text, 'the wait is over')
    for _, ev in ipairs(events) do
      eq(events[1].id, ev.id, 'one message for the whole sync')
    end
    eq('success', events[#events].status)
  end)

  it('setting it to cancel cancels the sync, which ends the same message', function()
    if skipped() then
      return
    end
    -- A sync that takes a few seconds: a 200 kB message at 40 kB/s.
    local fx = t.fixture({ '--folders', 'INBOX=3' })
    fx.deliver('demo', 'INBOX', 1, 200000)
    use(fx.mbsyncrc, { accounts = { demo = { throttle = { kbps = 40 } } } })
    local events = watch_progress()
    local asked = false
    on_progress(function(data)
      if not asked and data.status == 'running' then
        asked = true
        -- What a progress UI does (after this event, not inside it).
        vim.schedule(function()
          vim.api.nvim_echo({ { 'cancel' } }, false, {
            id = data.id,
            kind = 'progress',
            source = 'himalaya-sync',
            status = 'cancel',
          })
        end)
      end
    end)
    local result, info = t.sync_and_wait('full', { account = 'demo' }, 60000)
    eq('cancelled', info.status)
    eq(false, result.success)
    local asked_at
    for i, ev in ipairs(events) do
      eq(events[1].id, ev.id, 'no second message')
      asked_at = asked_at or (ev.status == 'cancel' and i)
      if asked_at then
        eq('cancel', ev.status, 'no progress shown as running after the cancel')
      end
    end
    ok(asked_at and #events > asked_at, 'the sync ended the message itself')
    -- (`text` is the message's chunks.)
    local text = events[#events].text
    eq(info.message, type(text) == 'table' and table.concat(text) or text)
  end)
end)
