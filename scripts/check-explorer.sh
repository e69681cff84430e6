#!/usr/bin/env bash
# The explorer in a real browser: Debian's Chromium and ChromeDriver
# (installed with apt-get the first time), Selenium (PyPI) and axe-core (the
# npm registry), pinned, under /var/tmp/instancemap-pytools and reused
# between runs. scripts/check_explorer.py builds a database with the CLI,
# serves it, and drives the pages: search, card, instance, list paging,
# flows, scripts off, keyboard, phone width, CSP, accessibility; screenshots
# in target/explorer/. Loopback only. Prints "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/instancemap-target}"

fail() { echo "check-explorer: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "check-explorer: installing chromium and chromium-driver (Debian's packages)" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null ||
        fail "could not install chromium and chromium-driver"
fi

tools="${INSTANCEMAP_PYTOOLS:-/var/tmp/instancemap-pytools}"
venv="$tools/venv"
py=(selenium==4.50.0)
stamp="$venv/.check-explorer-$(echo "${py[*]}" | sha256sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
    echo "check-explorer: installing ${py[*]} (PyPI) into $venv" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || fail "could not create a virtualenv in $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${py[@]}" >/dev/null 2>&1 ||
        fail "could not install ${py[*]}"
    touch "$stamp"
fi
axe_version=4.14.1
axe="$tools/axe-$axe_version/node_modules/axe-core/axe.min.js"
if [ ! -e "$axe" ]; then
    command -v npm >/dev/null 2>&1 || fail "npm is needed to install axe-core"
    echo "check-explorer: installing axe-core@$axe_version (npm) into $tools/axe-$axe_version" >&2
    npm install --silent --no-audit --no-fund --prefix "$tools/axe-$axe_version" "axe-core@$axe_version" >/dev/null ||
        fail "could not install axe-core@$axe_version"
fi
scripts/setup.sh
cargo build --quiet --bin instancemap || fail "build failed"
exec "$venv/bin/python" scripts/check_explorer.py --bin "$CARGO_TARGET_DIR/debug/instancemap" --axe "$axe" "$@"
