#!/usr/bin/env bash
# Installs what the build needs beyond a Rust toolchain: libclang, which the
# RocksDB bindings (bindgen) load at build time. Idempotent; quiet when
# everything is already there.
set -euo pipefail

have_libclang() {
    # Any one pattern matching is enough (`ls` of all three fails when one does not).
    local p
    for p in '/usr/lib/llvm-*/lib/libclang*.so*' '/usr/lib/x86_64-linux-gnu/libclang*.so*' '/usr/lib/aarch64-linux-gnu/libclang*.so*'; do
        compgen -G "$p" >/dev/null && return 0
    done
    return 1
}

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi

if ! have_libclang; then
    echo "setup: installing libclang-dev (needed by the RocksDB bindings)" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >/dev/null
fi
