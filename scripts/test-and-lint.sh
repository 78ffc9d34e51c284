#!/usr/bin/env bash
# `make test` after its install step: the build, then the tests in the
# foreground (`make test-rust`, then `make test-specs`: the Lua specs on
# every version, unless the Rust tests failed), and beside them at the
# lowest CPU priority `make lint` and the install of the other Neovims and
# mbsync. The build, the tests or lint failing fails this; lint's output
# comes after the tests', whole.
#
#   MAKE=make scripts/test-and-lint.sh
#
# The build makes what `make build` does (the library and the tool) and
# the test binaries in one cargo run, which compiles the library and its
# unit tests side by side: about a minute sooner than one after the other.
# `cargo test` leaves the library in target/release/deps; the `cargo build`
# after it only links it to target/release, where the plugin looks (it
# compiles nothing again).
#
# Why beside them: the tests mostly wait on servers, processes and timers,
# and leave about half of this machine's two CPUs idle, while clippy checks
# every dependency once more in its own mode, a minute of both CPUs that
# stood alone before the tests. At the lowest priority the jobs get only
# what the tests leave: a test process that wakes takes the CPU from them
# at once. Clippy gets a target folder of its own, as cargo lets one
# command at a time use a target folder.
#
# Installing the other versions (scripts/install-other-versions.sh) is 30 s
# of one CPU on a fresh checkout, most of it apt fetching and reading
# Debian's package lists. It starts before the build: started after it, it
# was not done when the Rust tests were, and the specs, which need it,
# waited 35 s. When it failed, `make test-specs` runs it again and stops
# with its error.
#
# The lowest priority is nice 19 twice. Each job runs in a session of its
# own (setsid), so that it and what it started can be stopped together when
# the tests are interrupted. With the kernel's autogroups (Debian's
# default), each session shares the CPUs as one group, whatever its
# processes' nice: a new session at nice 0 took half of them from the
# tests, whose engine tests then took 37 s instead of 21. So the session's
# group gets nice 19 (/proc/self/autogroup), and its processes too, for
# kernels without autogroups. The kernel takes such a change from a user at
# most every 100 ms across the machine, so a refused write is tried again.
#
# Its own session also escapes a kill of `make test`'s process group, and
# a SIGKILL runs no trap: so each session looks for this script every
# second, and once it is gone removes its log and stops itself.
set -uo pipefail

make=${MAKE:-make}
lint_log=$(mktemp "${TMPDIR:-/tmp}/himalaya-sync-lint.XXXXXX") || exit 1
install_log=$(mktemp "${TMPDIR:-/tmp}/himalaya-sync-install.XXXXXX") || {
  rm -f "$lint_log"
  exit 1
}

# in_background LOG COMMAND...: COMMAND in a session of its own at the
# lowest priority, its output in LOG; the session's pid in $background.
in_background() {
  local log=$1
  shift
  setsid bash -c \
    'for _ in 1 2 3; do { echo 19 >/proc/self/autogroup; } 2>/dev/null && break; sleep 0.2; done
     runner=$1 log=$2
     shift 2
     nice -n 19 "$@" &
     job=$!
     while kill -0 "$job" 2>/dev/null; do
       kill -0 "$runner" 2>/dev/null || { rm -f "$log"; kill -TERM -- "-$$"; }
       sleep 1
     done
     wait "$job"' \
    bash "$$" "$log" "$@" >"$log" 2>&1 &
  background=$!
}

background_jobs=()
cleanup() {
  for job in "${background_jobs[@]}"; do
    kill -TERM -- "-$job" 2>/dev/null
  done
  rm -f "$lint_log" "$install_log"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

in_background "$install_log" bash scripts/install-other-versions.sh
install=$background
background_jobs+=("$install")

cargo test --release --no-run && cargo build --release || exit

CARGO_TARGET_DIR=target/lint in_background "$lint_log" "$make" --no-print-directory lint
lint=$background
background_jobs+=("$lint")

tests=0
for t in test-rust test-specs; do
  if [ "$t" = test-specs ]; then
    wait "$install"
    cat "$install_log"
  fi
  "$make" --no-print-directory "$t" || {
    tests=$?
    break
  }
done

wait "$lint"
linted=$?
echo
echo "== make lint (it ran beside the tests)"
cat "$lint_log"
if [ "$linted" -ne 0 ]; then
  echo "make lint failed (exit $linted)"
fi
if [ "$tests" -ne 0 ]; then
  exit "$tests"
fi
exit "$linted"
