-- wrk script for benches/README.md ("Query API load"): lookup by a random
-- DID of the api_load bench's store (`INSTANCEMAP_BENCH_DB=DIR cargo bench
-- --bench api_load` builds it; then `instancemap serve --db DIR`). The DIDs
-- are did(n) of benches/api_load.rs: "did:plc:" and 24 base32 characters,
-- n in the last 12. ACCOUNTS must match the bench's (default 1,000,000).
--   wrk -t1 -c32 -d10s --latency -s benches/wrk/lookup.lua http://127.0.0.1:PORT
local ACCOUNTS = tonumber(os.getenv("ACCOUNTS") or "1000000")
local B32 = "abcdefghijklmnopqrstuvwxyz234567"

local function did(n)
  local t = {}
  for i = 12, 1, -1 do
    local d = n % 32
    t[i] = B32:sub(d + 1, d + 1)
    n = (n - d) / 32
  end
  return "did:plc:aaaaaaaaaaaa" .. table.concat(t)
end

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() + (seed or 0) * 7919)
end

function request()
  return wrk.format("GET", "/xrpc/dev.instancemap.lookup?subject=" .. did(math.random(0, ACCOUNTS - 1)))
end
