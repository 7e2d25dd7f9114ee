#!/usr/bin/env bash
# Installs everything the project needs to run and test, then puts its virtualenv first on PATH.
#
#   source scripts/install.sh   # from scripts/test.sh and scripts/demo.sh; sets STREAMSRV_VENV_DIR
#   bash scripts/install.sh     # just install
#
# Meant for Debian 12 as root (CI starts from a bare machine). Reruns are fast: apt is skipped when every package is
# installed, and the virtualenv is reused until pyproject.toml changes or it stops importing.
#   STREAMSRV_VENV    where the virtualenv lives (default ~/.cache/streamsrv-venv: outside the checkout, so it
#                     survives between CI runs)
#   STREAMSRV_PYTHON  interpreter to build it from (default python3, >= 3.11)

set -euo pipefail

# python3-venv: Debian's python3 cannot create a virtualenv without it. docker.io and debootstrap: the container test
# (tests/test_container.py) starts dockerd itself and builds its Debian base image with debootstrap. mosquitto: the MQTT output tests start their own broker.
STREAMSRV_APT_PACKAGES=(
  gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gstreamer1.0-tools python3-gi ffmpeg redis-server chromium coturn
  python3-venv docker.io debootstrap mosquitto
)

_streamsrv_say() { echo "==> [install] $*"; }

_streamsrv_apt() {
  local pkg missing=()
  for pkg in "${STREAMSRV_APT_PACKAGES[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    _streamsrv_say "system packages already installed"
    return
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install.sh: run as root to apt-get install: ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  _streamsrv_say "apt-get install ${missing[*]}"
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

_streamsrv_pip() {
  # Ignore any configured --find-links (some machines point it at /opt/wheels, whose CPU-only torch breaks
  # torchvision): torch and torchvision must be resolved together from the package index. A blank value is the
  # only way to clear a list option that a pip config file sets.
  PIP_FIND_LINKS=" " PIP_DISABLE_PIP_VERSION_CHECK=1 "$STREAMSRV_VENV_DIR/bin/python" -m pip "$@"
}

_streamsrv_venv_works() {
  [ -x "$STREAMSRV_VENV_DIR/bin/python" ] &&
    "$STREAMSRV_VENV_DIR/bin/python" -c "import torch, torchvision, ultralytics, av" 2>/dev/null
}

# Runs in a subshell so the lock is released when it returns, whatever happens: a later `exec` (demo.sh) must not
# carry it into a long-lived process, or every other checkout sharing this venv would wait on it.
_streamsrv_venv() (
  local repo=$1 python=${STREAMSRV_PYTHON:-python3}
  local stamp="$STREAMSRV_VENV_DIR/.streamsrv-pyproject.sha256" want
  want=$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)
  mkdir -p "$(dirname "$STREAMSRV_VENV_DIR")"
  # Several checkouts on one machine share the venv: one builds it, the others wait.
  exec 9>"$STREAMSRV_VENV_DIR.lock"
  flock 9

  if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && _streamsrv_venv_works; then
    _streamsrv_say "reusing $STREAMSRV_VENV_DIR"
  elif _streamsrv_venv_works; then
    # A changed pyproject.toml usually adds or bumps a few packages: update in place (seconds) instead of
    # rebuilding the 6 GB torch stack (minutes).
    _streamsrv_say "pyproject.toml changed: updating $STREAMSRV_VENV_DIR in place"
    _streamsrv_pip install --progress-bar off -q -e "${repo}[dev,fast]"
    echo "$want" >"$stamp"
  else
    if [ -e "$STREAMSRV_VENV_DIR" ]; then
      [ -f "$STREAMSRV_VENV_DIR/pyvenv.cfg" ] ||
        { echo "install.sh: $STREAMSRV_VENV_DIR exists and is not a virtualenv; not deleting it" >&2; exit 1; }
      _streamsrv_say "venv broken: rebuilding $STREAMSRV_VENV_DIR"
      rm -rf "$STREAMSRV_VENV_DIR"
    fi
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
      { echo "install.sh: $python is older than 3.11; set STREAMSRV_PYTHON" >&2; exit 1; }
    _streamsrv_say "creating $STREAMSRV_VENV_DIR with $("$python" --version) (first time: a few minutes)"
    "$python" -m venv "$STREAMSRV_VENV_DIR"
    _streamsrv_pip install -q --upgrade pip "setuptools>=68" wheel
    _streamsrv_pip install --progress-bar off -e "${repo}[dev,fast]"
    _streamsrv_venv_works || { echo "install.sh: venv built but torch/torchvision/ultralytics/av do not import" >&2; exit 1; }
    echo "$want" >"$stamp"
  fi
  # Cheap, and keeps the editable install pointing at this checkout even if another one installed itself last.
  _streamsrv_say "pip install -e $repo --no-deps"
  # Its setuptools warnings repeat on every run, so show them only when it fails.
  local log
  log=$(_streamsrv_pip install -q --no-deps --no-build-isolation -e "$repo" 2>&1) || { echo "$log" >&2; exit 1; }
)

STREAMSRV_VENV_DIR=${STREAMSRV_VENV:-$HOME/.cache/streamsrv-venv}
_streamsrv_apt
_streamsrv_venv "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export STREAMSRV_VENV_DIR PATH="$STREAMSRV_VENV_DIR/bin:$PATH"
_streamsrv_say "ready: $STREAMSRV_VENV_DIR"
