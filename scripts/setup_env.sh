#!/usr/bin/env bash
# One-time set-up used by `make test`, `make demo`, `make bench` and `make space`:
# Debian packages (installed when missing and running as root), a virtual environment in .venv
# and the pinned Python requirements. Re-running is cheap: each step is skipped when done.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
REQS=${1:-requirements-dev.txt}
# Debian packages: ffmpeg decodes audio for datasets/torchcodec and the pipeline; espeak-ng
# synthesises the demo corpus. EXTRA_APT adds optional ones (CI adds chromium for the browser test).
APT_PACKAGES="ffmpeg espeak-ng ${EXTRA_APT:-}"

missing=()
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
      apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: install them first, e.g. 'sudo apt-get install ${missing[*]}'" >&2
    exit 1
  fi
fi

stamp="$VENV/.requirements.sha"
want=$(cat requirements.txt "$REQS" | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip "setuptools<81" wheel
"$VENV/bin/python" -m pip install -q -r "$REQS"
echo "$want" > "$stamp"
echo "setup: environment ready in $VENV"
