#!/usr/bin/env bash
# Installs the two extra Neovims of `make test-other-nvims`, Debian's own
# builds, and only when missing: 0.10, the oldest the plugin supports, from
# Debian 13 (trixie), and the newest Debian has (0.12 or later) from forky
# (testing), else sid. apt downloads each with a source list of its own in
# .deps/ (nothing is installed system-wide, and the host's apt setup is not
# touched); the packages are unpacked into the same folder, and patchelf
# points the binary at their own C library and loader, so it also runs on
# an older Debian. Their runtime files come as VIMRUNTIME.
set -euo pipefail
shopt -s nullglob

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps="$root/.deps"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

missing=()
command -v patchelf >/dev/null 2>&1 || missing+=(patchelf)
[ -f "$keyring" ] || missing+=(debian-archive-keyring)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "install-other-nvims: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install-other-nvims: missing Debian packages; run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# Whether DIR holds a Neovim whose version line matches VERSION_RE.
has_nvim() {
  [ -x "$1/bin/nvim" ] && VIMRUNTIME="$1/runtime" "$1/bin/nvim" --version 2>/dev/null | head -n1 | grep -Eq "$2"
}

# Unpacks Debian SUITE's neovim and everything it needs to run, down to
# the C library, into DIR; false when the suite has none.
unpack_nvim() {
  local suite=$1 dir=$2
  rm -rf "$dir"
  mkdir -p "$dir/apt/lists/partial" "$dir/apt/archives/partial" "$dir/debs" "$dir/root" "$dir/bin"
  echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" >"$dir/apt/sources.list"
  local apt_opts=(-o "Dir::Etc::sourcelist=$dir/apt/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt" -o "APT::Sandbox::User=$(id -un)")
  apt-get "${apt_opts[@]}" update -qq --error-on=any
  local list pkgs
  list=$(apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances neovim 2>/dev/null) || return 1
  mapfile -t pkgs < <(grep -v '^[ <]' <<<"$list" | sort -u)
  printf '%s\n' "${pkgs[@]}" | grep -qx neovim || return 1
  (cd "$dir/debs" && apt-get "${apt_opts[@]}" download -qq "${pkgs[@]}")
  local debs=("$dir"/debs/*.deb) deb
  [ ${#debs[@]} -gt 0 ] || return 1
  for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$dir/root"; done
  local libc loader
  libc=$(find "$dir/root/usr/lib" -maxdepth 2 -name libc.so.6 | head -n1)
  loader=$(find "$(dirname "$libc")" -maxdepth 1 \( -name 'ld-linux*.so.*' -o -name 'ld64.so.*' \) | head -n1)
  cp "$dir/root/usr/bin/nvim" "$dir/bin/nvim"
  # An RPATH (not RUNPATH) also covers the libraries' own dependencies,
  # such as LuaJIT's libgcc_s.
  patchelf --set-interpreter "$loader" --set-rpath "$(dirname "$libc")" --force-rpath "$dir/bin/nvim"
  ln -s root/usr/share/nvim/runtime "$dir/runtime"
  rm -rf "$dir/apt" "$dir/debs"
}

# install_nvim NAME VERSION_RE SUITE...: the first SUITE whose Neovim
# matches. (Called in a condition, unpack_nvim runs without `set -e`: a
# step that fails, such as apt without a network, shows its own error and
# leaves no matching Neovim, which is checked.)
install_nvim() {
  local name=$1 version_re=$2 dir="$deps/nvim-$1" suite
  shift 2
  has_nvim "$dir" "$version_re" && return
  for suite in "$@"; do
    echo "install-other-nvims: installing Neovim from Debian $suite's packages into $dir"
    if unpack_nvim "$suite" "$dir" && has_nvim "$dir" "$version_re"; then
      return
    fi
    echo "install-other-nvims: no Neovim matching $version_re from Debian $suite (see above)" >&2
  done
  rm -rf "$dir"
  echo "install-other-nvims: cannot install the $name Neovim for make test-other-nvims" >&2
  exit 1
}

install_nvim oldest '^NVIM v0\.10\.' trixie
install_nvim newest '^NVIM v(0\.(1[2-9]|[2-9][0-9])|[1-9][0-9]*)\.' forky sid
