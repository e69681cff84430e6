// Quick look at what a started peer network publishes (run after scenario.mjs):
//   - the PLC directory's /export (paged by `after`; a short page is the last),
//   - each PDS firehose (subscribeRepos?cursor=0), read until 2 s of silence.
// Prints {plc: {operations, dids, nullified}, pds_a: {frames, by_type}, pds_b: {...}}
// and exits 1 if the export or either firehose came back empty.
// Usage: node check.mjs [STATE_DIR/peers.json]  (with the cached Node 22)
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const cache = process.env.INSTANCEMAP_PEERS_CACHE || '/var/tmp/instancemap-peers'
const require = createRequire(path.join(cache, 'package.json'))
const { cborDecodeMulti } = await import(pathToFileURL(require.resolve('@atproto/common')).href)
const peersFile = process.argv[2] || path.join(process.env.INSTANCEMAP_PEERS_STATE || '.', 'peers.json')
const peers = JSON.parse(fs.readFileSync(peersFile, 'utf8'))

async function plcExport() {
  const ops = []
  let after
  for (let page = 0; page < 100; page++) { // bounded: version 0.0.1 ignores `count`
    const url = `${peers.plc_url}/export` + (after ? `?after=${encodeURIComponent(after)}` : '')
    const lines = (await (await fetch(url)).text()).split('\n').filter(Boolean).map((l) => JSON.parse(l))
    const fresh = lines.filter((l) => !ops.some((o) => o.cid === l.cid))
    ops.push(...fresh)
    if (lines.length < 1000 || fresh.length === 0) break
    after = lines[lines.length - 1].createdAt
  }
  return { operations: ops.length, dids: new Set(ops.map((o) => o.did)).size, nullified: ops.filter((o) => o.nullified).length }
}

function firehose(pdsUrl) {
  const url = pdsUrl.replace(/^http/, 'ws') + '/xrpc/com.atproto.sync.subscribeRepos?cursor=0'
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.binaryType = 'arraybuffer'
    const byType = {}
    let frames = 0
    let idle
    const done = () => { ws.close(); resolve({ frames, by_type: byType }) }
    const bump = () => { clearTimeout(idle); idle = setTimeout(done, 2000) }
    ws.onopen = bump
    ws.onerror = (e) => reject(new Error(`${url}: ${e.message || 'websocket error'}`))
    ws.onmessage = (msg) => {
      const [header] = cborDecodeMulti(new Uint8Array(msg.data))
      const t = header.op === 1 ? header.t : `error`
      byType[t] = (byType[t] || 0) + 1
      frames++
      bump()
    }
  })
}

const out = { plc: await plcExport(), pds_a: await firehose(peers.pds_a_url), pds_b: await firehose(peers.pds_b_url) }
console.log(JSON.stringify(out, null, 2))
if (!out.plc.operations || !out.pds_a.frames || !out.pds_b.frames) process.exit(1)
