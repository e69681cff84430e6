// Drives a started peer network (start.sh) through a fixed story and prints,
// as JSON on stdout, the end state that instancemap should then report:
//   { plc_url, pds_a_url, pds_b_url,
//     accounts: { <did>: { name, handle, pds, status } },   // status: active |
//                                           // deactivated | deleted | takendown
//     migrations: [ { did, from, to } ] }                 // from/to: PDS URLs
// Story, all on PDS A first: alice, bob, carol, dave, erin, frank, grace sign
// up with a profile and posts (carol's profile has an avatar blob); alice
// follows bob and carol, bob likes alice's first post; bob's handle changes;
// carol migrates to PDS B (standard account-migration calls) and posts there;
// dave deactivates then reactivates; frank deactivates; erin is deleted by the
// admin; grace is taken down by the admin. The end state is then checked
// against the peers (PLC DID documents, getRepoStatus) before it is printed.
// Usage: node scenario.mjs [STATE_DIR/peers.json]  (with the cached Node 22)
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const cache = process.env.INSTANCEMAP_PEERS_CACHE || '/var/tmp/instancemap-peers'
const require = createRequire(path.join(cache, 'package.json'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)
const { AtpAgent } = await load('@atproto/api')
const Sqlite = (await load('better-sqlite3')).default

const peersFile = process.argv[2] || path.join(process.env.INSTANCEMAP_PEERS_STATE || '.', 'peers.json')
const peers = JSON.parse(fs.readFileSync(peersFile, 'utf8'))
const A = peers.pds_a_url
const B = peers.pds_b_url
const t0 = Date.now()
const say = (msg) => console.error(`scenario: ${msg}`)
const now = () => new Date().toISOString()

// 1x1 PNG, carol's avatar: gives the migration a blob to move.
const avatarPng = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==',
  'base64',
)

const accounts = {} // name -> { agent, did, handle, pds, status, password }
const migrations = []

async function signUp(name) {
  const agent = new AtpAgent({ service: A })
  const password = `pw-${name}-0123456789`
  const handle = `${name}.pds-a.test`
  const res = await agent.createAccount({ handle, email: `${name}@mail.test`, password })
  const did = res.data.did
  const profile = { $type: 'app.bsky.actor.profile', displayName: name[0].toUpperCase() + name.slice(1), description: `${name} on PDS A` }
  if (name === 'carol') {
    profile.avatar = (await agent.com.atproto.repo.uploadBlob(avatarPng, { encoding: 'image/png' })).data.blob
  }
  await agent.com.atproto.repo.putRecord({ repo: did, collection: 'app.bsky.actor.profile', rkey: 'self', record: profile })
  const posts = []
  for (let i = 1; i <= 3; i++) {
    const r = await agent.com.atproto.repo.createRecord({
      repo: did, collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text: `${name}'s post ${i}`, createdAt: now() },
    })
    posts.push(r.data)
  }
  accounts[name] = { agent, did, handle, pds: A, status: 'active', password, posts }
  say(`${name} signed up as ${did}`)
}

const adminAuth = 'Basic ' + Buffer.from(`admin:${peers.admin_password}`).toString('base64')
async function admin(pds, nsid, body) {
  const res = await fetch(`${pds}/xrpc/${nsid}`, {
    method: 'POST', headers: { authorization: adminAuth, 'content-type': 'application/json' }, body: JSON.stringify(body),
  })
  if (!res.ok) throw new Error(`${nsid} on ${pds}: ${res.status} ${await res.text()}`)
}

// Standard account migration A -> B (the same calls a user's client makes).
async function migrate(name, newHandle) {
  const acct = accounts[name]
  const oldAgent = acct.agent
  const did = acct.did
  // 1. Service auth from the old PDS proves control of the DID to the new one.
  const { token } = (await oldAgent.com.atproto.server.getServiceAuth({
    aud: peers.pds_b_did, lxm: 'com.atproto.server.createAccount',
  })).data
  // 2. Create the account on B with the existing DID: it starts deactivated.
  const newAgent = new AtpAgent({ service: B })
  await newAgent.com.atproto.server.createAccount(
    { did, handle: newHandle, email: `${name}@mail.test`, password: acct.password },
    { headers: { authorization: `Bearer ${token}` } },
  )
  await newAgent.login({ identifier: newHandle, password: acct.password })
  // 3. Repo and blobs.
  const car = (await oldAgent.com.atproto.sync.getRepo({ did })).data
  await newAgent.com.atproto.repo.importRepo(car, { encoding: 'application/vnd.ipld.car' })
  let cursor
  do {
    const missing = (await newAgent.com.atproto.repo.listMissingBlobs({ cursor, limit: 100 })).data
    for (const { cid } of missing.blobs) {
      const blob = await oldAgent.com.atproto.sync.getBlob({ did, cid })
      await newAgent.com.atproto.repo.uploadBlob(blob.data, { encoding: blob.headers['content-type'] })
    }
    cursor = missing.cursor
  } while (cursor)
  // (Preferences are skipped: without an app view configured these PDSes
  // answer app.bsky.actor.getPreferences with "No service configured".)
  // 4. PLC operation pointing at B, signed by A's rotation key. A emails the
  //    confirmation token; these peers send no mail, so read it from A's db.
  const creds = (await newAgent.com.atproto.identity.getRecommendedDidCredentials()).data
  await oldAgent.com.atproto.identity.requestPlcOperationSignature()
  const db = new Sqlite(path.join(peers.pds_a_data, 'account.sqlite'), { readonly: true })
  const row = db.prepare("select token from email_token where did = ? and purpose = 'plc_operation'").get(did)
  db.close()
  const { operation } = (await oldAgent.com.atproto.identity.signPlcOperation({ token: row.token, ...creds })).data
  await newAgent.com.atproto.identity.submitPlcOperation({ operation })
  // 5. Switch over: activate on B, deactivate on A.
  await newAgent.com.atproto.server.activateAccount()
  await oldAgent.com.atproto.server.deactivateAccount({})
  Object.assign(acct, { agent: newAgent, handle: newHandle, pds: B })
  migrations.push({ did, from: A, to: B })
  say(`${name} migrated to ${B} as ${newHandle}`)
}

// --- the story ---------------------------------------------------------------
for (const name of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace']) await signUp(name)
const { alice, bob, carol, dave, erin, frank, grace } = accounts

for (const who of [bob, carol]) {
  await alice.agent.com.atproto.repo.createRecord({
    repo: alice.did, collection: 'app.bsky.graph.follow', record: { $type: 'app.bsky.graph.follow', subject: who.did, createdAt: now() },
  })
}
await bob.agent.com.atproto.repo.createRecord({
  repo: bob.did, collection: 'app.bsky.feed.like',
  record: { $type: 'app.bsky.feed.like', subject: { uri: alice.posts[0].uri, cid: alice.posts[0].cid }, createdAt: now() },
})

await bob.agent.com.atproto.identity.updateHandle({ handle: 'robert.pds-a.test' })
bob.handle = 'robert.pds-a.test'
say('bob is now robert.pds-a.test')

await migrate('carol', 'carol.pds-b.test')
await carol.agent.com.atproto.repo.createRecord({
  repo: carol.did, collection: 'app.bsky.feed.post', record: { $type: 'app.bsky.feed.post', text: 'carol, now on PDS B', createdAt: now() },
})

await dave.agent.com.atproto.server.deactivateAccount({})
await dave.agent.com.atproto.server.activateAccount()
say('dave deactivated and reactivated')
await frank.agent.com.atproto.server.deactivateAccount({})
frank.status = 'deactivated'
say('frank deactivated')

await admin(A, 'com.atproto.admin.deleteAccount', { did: erin.did })
erin.status = 'deleted'
say('erin deleted by the admin')
await admin(A, 'com.atproto.admin.updateSubjectStatus', {
  subject: { $type: 'com.atproto.admin.defs#repoRef', did: grace.did },
  takedown: { applied: true, ref: 'scenario-takedown' },
})
grace.status = 'takendown'
say('grace taken down by the admin')

// --- check the expected end state against the peers ----------------------------
const problems = []
for (const [name, a] of Object.entries(accounts)) {
  const doc = await (await fetch(`${peers.plc_url}/${a.did}`)).json()
  const handle = (doc.alsoKnownAs || [])[0]?.replace('at://', '')
  const pds = (doc.service || []).find((s) => s.id === '#atproto_pds')?.serviceEndpoint
  if (handle !== a.handle) problems.push(`${name}: PLC handle ${handle}, expected ${a.handle}`)
  if (pds !== a.pds) problems.push(`${name}: PLC PDS ${pds}, expected ${a.pds}`)
  const res = await fetch(`${a.pds}/xrpc/com.atproto.sync.getRepoStatus?did=${a.did}`)
  const st = await res.json()
  const status = res.ok ? (st.active ? 'active' : st.status) : st.error === 'RepoNotFound' ? 'deleted' : `error ${st.error}`
  if (status !== a.status) problems.push(`${name}: status ${status} on ${a.pds}, expected ${a.status}`)
}
if (problems.length) {
  console.error(`scenario: end state differs:\n  ${problems.join('\n  ')}`)
  process.exit(1)
}

const summary = {
  plc_url: peers.plc_url,
  pds_a_url: A,
  pds_b_url: B,
  accounts: Object.fromEntries(
    Object.entries(accounts).map(([name, a]) => [a.did, { name, handle: a.handle, pds: a.pds, status: a.status }]),
  ),
  migrations,
}
console.log(JSON.stringify(summary, null, 2))
say(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
