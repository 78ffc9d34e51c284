---@meta
-- Type definitions for the part of luv (`vim.uv`) the plugin uses, for
-- `make lint` (emmylua_check). Neovim's runtime types `vim.uv` as the class
-- `uv` but does not ship its definitions; no package registry this project
-- installs from has them either. The names follow the LuaCATS luv
-- definitions (`uv`, `uv.uv_timer_t`, ...) so that a full set, where one is
-- installed, describes the same types. Signatures are luv's documented ones
-- (docs.md); on failure luv functions return `nil, err, err_name`.
-- Never loaded at run time: this folder is not on 'runtimepath'.

---@class uv
local uv = {}

--- Base of every libuv handle.
---@class uv.uv_handle_t
local uv_handle_t = {}

--- Requests the handle to be closed; `callback` runs once it is.
---@param callback? fun()
function uv_handle_t:close(callback) end

--- True while the handle is closing or closed.
---@return boolean|nil closing
---@return string? err
---@return string? err_name
function uv_handle_t:is_closing() end

---@class uv.uv_timer_t : uv.uv_handle_t
local uv_timer_t = {}

--- Starts the timer: `callback` after `timeout` ms, then every `repeat_` ms
--- when that is not 0.
---@param timeout integer
---@param repeat_ integer
---@param callback fun()
---@return 0|nil success
---@return string? err
---@return string? err_name
function uv_timer_t:start(timeout, repeat_, callback) end

---@return 0|nil success
---@return string? err
---@return string? err_name
function uv_timer_t:stop() end

--- Stops the timer and, when it repeats, starts it again with the repeat
--- as its timeout.
---@return 0|nil success
---@return string? err
---@return string? err_name
function uv_timer_t:again() end

---@class uv.uv_poll_t : uv.uv_handle_t
local uv_poll_t = {}

--- Starts polling the file descriptor for `events` ("r", "w", "rw", ...;
--- default "rw").
---@param events? string
---@param callback fun(err?: string, events?: string)
---@return 0|nil success
---@return string? err
---@return string? err_name
function uv_poll_t:start(events, callback) end

---@return 0|nil success
---@return string? err
---@return string? err_name
function uv_poll_t:stop() end

---@class uv.fs_stat.result.time
---@field sec integer
---@field nsec integer

---@class uv.fs_stat.result
---@field dev integer
---@field mode integer
---@field nlink integer
---@field uid integer
---@field gid integer
---@field rdev integer
---@field ino integer
---@field size integer
---@field blksize integer
---@field blocks integer
---@field flags integer
---@field gen integer
---@field atime uv.fs_stat.result.time
---@field mtime uv.fs_stat.result.time
---@field ctime uv.fs_stat.result.time
---@field birthtime uv.fs_stat.result.time
---@field type string

---@class uv.os_uname.info
---@field sysname string
---@field release string
---@field version string
---@field machine string

--- The loop's cached time in milliseconds (monotonic, arbitrary origin).
---@return integer
function uv.now() end

--- The wall clock: seconds and microseconds since the Unix epoch.
---@return integer sec
---@return integer usec
function uv.gettimeofday() end

---@return uv.uv_timer_t|nil timer
---@return string? err
---@return string? err_name
function uv.new_timer() end

--- A poll handle on file descriptor `fd` (set to non-blocking mode).
---@param fd integer
---@return uv.uv_poll_t|nil poll
---@return string? err
---@return string? err_name
function uv.new_poll(fd) end

--- `stat(2)`, synchronous form.
---@param path string
---@return uv.fs_stat.result|nil stat
---@return string? err
---@return string? err_name
function uv.fs_stat(path) end

--- Copies a file, synchronous form.
---@param path string
---@param new_path string
---@param flags? integer|{excl?: boolean, ficlone?: boolean, ficlone_force?: boolean}
---@return boolean|nil success
---@return string? err
---@return string? err_name
function uv.fs_copyfile(path, new_path, flags) end

--- `mkdir(2)`, synchronous form.
---@param path string
---@param mode integer
---@return boolean|nil success
---@return string? err
---@return string? err_name
function uv.fs_mkdir(path, mode) end

--- `rename(2)`, synchronous form.
---@param path string
---@param new_path string
---@return boolean|nil success
---@return string? err
---@return string? err_name
function uv.fs_rename(path, new_path) end

--- `unlink(2)`, synchronous form.
---@param path string
---@return boolean|nil success
---@return string? err
---@return string? err_name
function uv.fs_unlink(path) end

---@return integer pid
function uv.os_getpid() end

---@return uv.os_uname.info
function uv.os_uname() end
