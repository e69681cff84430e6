#!/usr/bin/env bash
# Installs what the build needs beyond a Rust toolchain: libclang, which the
# RocksDB bindings (bindgen) load at build time. Idempotent; quiet when
# everything is already there.
set -euo pipefail

have_libclang() {
    # What bindgen (clang-sys) loads: libclang.so, libclang-*.so, libclang.so.*
    # or libclang-*.so.*, not libclang-cpp.so.* (the C++ interface, which a
    # fresh Debian machine ships without libclang). LIBCLANG_PATH, where set,
    # is where clang-sys looks first. Any one match is enough.
    local d n f
    local dirs=(/usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib /usr/local/lib)
    if [ -n "${LIBCLANG_PATH:-}" ]; then dirs=("$LIBCLANG_PATH" "${dirs[@]}"); fi
    for d in "${dirs[@]}"; do
        for n in 'libclang.so' 'libclang-*.so' 'libclang.so.*' 'libclang-*.so.*'; do
            for f in $d/$n; do
                [ -e "$f" ] || continue
                case "${f##*/}" in libclang-cpp*) continue ;; esac
                return 0
            done
        done
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
