// Runs one reference peer in this process, bound to 127.0.0.1 only.
//   node launch.mjs plc   env: PLC_PORT, PLC_DB_URL (postgres)
//   node launch.mjs pds   env: the PDS's own PDS_* variables (see start.sh);
//                         LAUNCH_AFTER_PID: open the data only once that pid
//                         has exited (restart-pds.sh)
// Packages come from the cache dir that install.sh filled
// ($INSTANCEMAP_PEERS_CACHE, default /var/tmp/instancemap-peers).
// SIGTERM/SIGINT shut the server down cleanly.
import net from 'node:net'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

// The packages call `app.listen(port)`, which binds every interface: put the
// loopback address into any listen() call that names a port but no host.
const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const a = args[0]
  if (typeof a === 'number' || (typeof a === 'string' && /^\d+$/.test(a))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1')
  } else if (a && typeof a === 'object' && a.port !== undefined && !a.host) {
    args[0] = { ...a, host: '127.0.0.1' }
  }
  return listen.apply(this, args)
}

const cache = process.env.INSTANCEMAP_PEERS_CACHE || '/var/tmp/instancemap-peers'
const require = createRequire(path.join(cache, 'package.json'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)

const role = process.argv[2]
let server
if (role === 'plc') {
  // Postgres-backed: the in-memory mock database answers /export with nothing.
  const plc = await load('@did-plc/server')
  const { Database, PlcServer } = plc.PlcServer ? plc : plc.default
  const db = Database.postgres({ url: process.env.PLC_DB_URL })
  await db.migrateToLatestOrThrow()
  server = PlcServer.create({ db, port: Number(process.env.PLC_PORT), version: '0.0.1' })
} else if (role === 'pds') {
  const pds = await load('@atproto/pds')
  // A restart (restart-pds.sh) starts this process before it stops the old
  // one, so the slow module loading above overlaps the old one's shutdown;
  // the data dir is opened only once the old process is gone.
  const after = Number(process.env.LAUNCH_AFTER_PID || 0)
  if (after) {
    const gone = () => { try { process.kill(after, 0); return false } catch { return true } }
    const deadline = Date.now() + 15000
    while (!gone()) {
      if (Date.now() > deadline) throw new Error(`pid ${after} still running after 15 s`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  const env = pds.readEnv()
  server = await pds.PDS.create(pds.envToCfg(env), pds.envToSecrets(env))
} else {
  console.error('usage: launch.mjs plc|pds')
  process.exit(2)
}
const http = await server.start()
const addr = http.address()
console.log(`launch: ${role} listening on ${addr.address}:${addr.port} (pid ${process.pid})`)

let stopping = false
const stop = async (sig) => {
  if (stopping) return
  stopping = true
  console.log(`launch: ${role} got ${sig}, stopping`)
  const force = setTimeout(() => process.exit(0), 5000)
  force.unref()
  try {
    await server.destroy()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', () => stop('SIGTERM'))
process.on('SIGINT', () => stop('SIGINT'))
