// Drives a started peer network (start.sh) through a fixed story and prints,
// as JSON on stdout, the end state that instancemap should then report:
//   { plc_url, pds_a_url, pds_b_url,
//     accounts: { <did>: { name, handle, pds, status } },   // status: active |
//                                           // deactivated | deleted | takendown
//     migrations: [ { did, from, to } ],                  // from/to: PDS URLs
//     service_dids: { <pds url>: <describeServer did> },
//     restarts: [ { pds, service_did, last_seq_before, first_seq_after } ],
//     declarations: { <operator did>: { name, record, verified_hosts,
//                     verified_domains, unverified: [claim...] } },
//     memberships: { <member did>: { name, operator, counted, why } },
//     invalid_records: { <collection>/<reason>: n },
//     instances: { <pds url>: { anchor, name, hosts, operator,
//                               declared_members } } }
// Story: opal signs up on PDS A, which is then restarted with opal's DID as
// its service DID (describeServer `did`: opal provably runs PDS A); otto,
// max and mel sign up on PDS B meanwhile. Then, all on PDS A: alice, bob,
// carol, dave, erin, frank, grace sign up with a profile and posts (carol's
// profile has an avatar blob); alice follows bob and carol, bob likes
// alice's first post; bob's handle changes; carol migrates to PDS B
// (standard account-migration calls) and posts there; dave deactivates then
// reactivates; frank deactivates; erin is deleted by the admin; grace is
// taken down by the admin. Last, declarations: mia signs up on A; opal
// declares PDS A (honest), otto declares PDS A and PDS B (he runs neither);
// mia (on A) and max (on B) say they belong to opal's instance, mel to
// otto's; alice publishes a declaration with no name and dave a membership
// naming a handle instead of a DID (both malformed). The end state is then
// checked against the peers (PLC DID documents, getRepoStatus, the new
// records, describeServer, PDS A's sequencer) before it is printed.
// Usage: node scenario.mjs [STATE_DIR/peers.json]  (with the cached Node 22)
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { spawn } from 'node:child_process'
import { fileURLToPath, pathToFileURL } from 'node:url'

const cache = process.env.INSTANCEMAP_PEERS_CACHE || '/var/tmp/instancemap-peers'
const require = createRequire(path.join(cache, 'package.json'))
const load = (name) => import(pathToFileURL(require.resolve(name)).href)
const { AtpAgent } = await load('@atproto/api')
const Sqlite = (await load('better-sqlite3')).default

const peersFile = process.argv[2] || path.join(process.env.INSTANCEMAP_PEERS_STATE || '.', 'peers.json')
const peers = JSON.parse(fs.readFileSync(peersFile, 'utf8'))
const here = path.dirname(fileURLToPath(import.meta.url))
const A = peers.pds_a_url
const B = peers.pds_b_url
const t0 = Date.now()
const say = (msg) => console.error(`scenario: [${((Date.now() - t0) / 1000).toFixed(1)} s] ${msg}`)
const now = () => new Date().toISOString()

// 1x1 PNG, carol's avatar: gives the migration a blob to move.
const avatarPng = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==',
  'base64',
)

const accounts = {} // name -> { name, agent, did, handle, pds, status, password, posts }
const migrations = []

// signUp(name, { pds, posts }): an account on PDS A (default) or B with a
// profile and `posts` posts (default 3).
async function signUp(name, { pds = A, posts: nPosts = 3 } = {}) {
  const agent = new AtpAgent({ service: pds })
  const password = `pw-${name}-0123456789`
  const letter = pds === A ? 'a' : 'b'
  const handle = `${name}.pds-${letter}.test`
  const res = await agent.createAccount({ handle, email: `${name}@mail.test`, password })
  const did = res.data.did
  const profile = {
    $type: 'app.bsky.actor.profile', displayName: name[0].toUpperCase() + name.slice(1), description: `${name} on PDS ${letter.toUpperCase()}`,
  }
  if (name === 'carol') {
    profile.avatar = (await agent.com.atproto.repo.uploadBlob(avatarPng, { encoding: 'image/png' })).data.blob
  }
  await agent.com.atproto.repo.putRecord({ repo: did, collection: 'app.bsky.actor.profile', rkey: 'self', record: profile })
  const posts = []
  for (let i = 1; i <= nPosts; i++) {
    const r = await agent.com.atproto.repo.createRecord({
      repo: did, collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text: `${name}'s post ${i}`, createdAt: now() },
    })
    posts.push(r.data)
  }
  accounts[name] = { name, agent, did, handle, pds, status: 'active', password, posts }
  say(`${name} signed up on ${pds} as ${did}`)
}

// PDS A's sequencer: the last seq, or the first one after `after`.
function seqOfA(after) {
  const db = new Sqlite(path.join(peers.pds_a_data, 'sequencer.sqlite'), { readonly: true })
  const row = after === undefined
    ? db.prepare('select max(seq) as seq from repo_seq').get()
    : db.prepare('select min(seq) as seq from repo_seq where seq > ?').get(after)
  db.close()
  return row.seq
}

// Restarts a PDS (restart-pds.sh: same port, data and secrets) with some
// environment variables changed; peers.json follows.
async function restartPds(name, vars) {
  const child = spawn(path.join(here, 'restart-pds.sh'), [peers.state_dir, name, ...vars], { stdio: ['ignore', 'ignore', 'inherit'] })
  const code = await new Promise((resolve, reject) => child.on('error', reject).on('exit', resolve))
  if (code !== 0) throw new Error(`restart-pds.sh ${name} exited with ${code}`)
  Object.assign(peers, JSON.parse(fs.readFileSync(peersFile, 'utf8')))
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
// opal runs PDS A: its describeServer must name her DID, which it takes from
// PDS_SERVICE_DID. Her account must exist first (the PDS makes the DID), so
// PDS A restarts with it; the data dir persists and the sequencer goes on.
// Meanwhile otto, max and mel sign up on PDS B (they only matter at the end).
await signUp('opal', { posts: 0 })
const { opal } = accounts
const restarts = []
const seqBefore = seqOfA()
await Promise.all([
  restartPds('pds_a', [`PDS_SERVICE_DID=${opal.did}`]),
  (async () => { for (const name of ['otto', 'max', 'mel']) await signUp(name, { pds: B, posts: 0 }) })(),
])
restarts.push({ pds: A, service_did: opal.did, last_seq_before: seqBefore })
// the service DID is the audience of every session token: log in again
await opal.agent.login({ identifier: opal.handle, password: opal.password })
say(`PDS A restarted as ${opal.did}`)

for (const name of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace']) await signUp(name)
restarts[0].first_seq_after = seqOfA(seqBefore)
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

// --- declarations and memberships -------------------------------------------------
const DECLARATION = 'dev.instancemap.declaration'
const MEMBERSHIP = 'dev.instancemap.membership'
await signUp('mia', { posts: 0 })
const { mia, otto, max, mel } = accounts
const published = [] // [account, collection], each checked with getRecord below
async function put(acct, collection, record) {
  await acct.agent.com.atproto.repo.putRecord({ repo: acct.did, collection, rkey: 'self', record: { $type: collection, ...record } })
  published.push([acct, collection])
}
const declared = {} // operator name -> the record as published (without $type)
async function declare(acct, record) {
  await put(acct, DECLARATION, record)
  declared[acct.name] = record
  say(`${acct.name} declared ${record.name}: ${record.pdsHosts.join(', ')}`)
}
// opal runs PDS A: every claim is true. The host is written with a trailing
// slash; instancemap normalises it to the endpoint it knows.
await declare(opal, {
  name: 'Opal Social',
  description: 'The instance behind PDS A.',
  pdsHosts: [`${A}/`],
  accountDomains: ['.pds-a.test'],
  moderationContact: 'mod@pds-a.test',
  abuseContact: 'https://pds-a.test/abuse',
  policies: {
    termsOfService: 'https://pds-a.test/tos',
    privacyPolicy: 'https://pds-a.test/privacy',
    moderationPolicy: 'https://pds-a.test/moderation',
    communityGuidelines: 'https://pds-a.test/guidelines',
  },
  labelers: ['did:web:labeler.pds-a.test'],
  jurisdiction: 'NL',
  // the second version: the operator's face, contacts by role (the mail
  // domains are the suite's DNS: mail.pds-a.test has an MX,
  // nomx.pds-a.test nothing), the moderation service it delegates to
  // (max's, which confirms below) and a route for spam
  serviceName: 'Opal PDS',
  homeUrl: 'https://pds-a.test/',
  supportUrl: 'https://pds-a.test/support',
  contacts: [
    { role: 'abuse', email: 'abuse@mail.pds-a.test' },
    { role: 'security', email: 'security@nomx.pds-a.test', confidential: true },
    { role: 'support', url: `${A}/xrpc/_health` },
  ],
  moderationService: `${max.did}#atproto_labeler`,
  routes: [{ reasonTypes: ['com.atproto.moderation.defs#reasonSpam'], contact: 'abuse' }],
  createdAt: now(),
})
// max runs the moderation service opal delegates to, and confirms it
await declare(max, { name: 'Max Moderation', pdsHosts: [], moderatesFor: [opal.did], createdAt: now() })
// otto takes over PDS B below and tries to take PDS A's instance too: he
// claims both hosts and A's user domain (only B's claim can be proven).
await declare(otto, {
  name: 'Totally PDS A',
  pdsHosts: [A, B],
  accountDomains: ['.pds-a.test'],
  moderationContact: 'otto@mail.pds-b.test',
  // a delegation opal never confirms: listed unverified, never a route
  moderationService: `${opal.did}#atproto_labeler`,
  createdAt: now(),
})
const memberships = {}
async function join(member, operator, counted, why) {
  await put(member, MEMBERSHIP, { operator: operator.did, createdAt: now() })
  memberships[member.did] = { name: member.name, operator: operator.did, counted, why }
  say(`${member.name} says it belongs to ${operator.name}'s instance`)
}
await join(mia, opal, true, "on PDS A, which opal's verified declaration covers")
await join(max, opal, false, "on PDS B and a .pds-b.test handle: opal's declaration covers neither")
await join(mel, otto, true, "on PDS B, which otto's declaration proves once B's describeServer names him")
// Malformed: not stored, counted under invalid_records.
const invalidRecords = {}
await put(alice, DECLARATION, { pdsHosts: [A], createdAt: now() }) // no name
invalidRecords[`${DECLARATION}/shape`] = 1
await put(dave, MEMBERSHIP, { operator: opal.handle, createdAt: now() }) // a handle, not a DID
invalidRecords[`${MEMBERSHIP}/operator`] = 1
say('alice and dave published malformed records')

// The takeover attempt, on a real PDS: PDS B restarts with otto's DID as its
// service DID and advertises PDS A's user domain beside its own. Evidence is
// proven: no account created on B holds a .pds-a.test handle, so the suffix
// links nothing; otto's declaration proves B (its describeServer names him)
// and nothing of A. Opal's instance keeps its hosts, name, operator and id.
await restartPds('pds_b', [`PDS_SERVICE_DID=${otto.did}`, 'PDS_SERVICE_HANDLE_DOMAINS=.pds-b.test,.pds-a.test'])
say(`PDS B restarted as ${otto.did}, advertising .pds-a.test too`)

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
for (const [pds, did] of [[A, opal.did], [B, peers.pds_b_did]]) {
  const d = await (await fetch(`${pds}/xrpc/com.atproto.server.describeServer`)).json()
  if (d.did !== did) problems.push(`describeServer of ${pds} names ${d.did}, expected ${did}`)
}
const r0 = restarts[0]
if (r0.first_seq_after !== r0.last_seq_before + 1) {
  problems.push(`PDS A's sequencer after the restart: first seq ${r0.first_seq_after}, expected ${r0.last_seq_before + 1}`)
}
for (const [a, collection] of published) {
  const res = await fetch(`${a.pds}/xrpc/com.atproto.repo.getRecord?repo=${a.did}&collection=${collection}&rkey=self`)
  if (!res.ok) problems.push(`${a.name}: ${collection}/self not on ${a.pds} (${res.status})`)
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
  service_dids: { [A]: opal.did, [B]: peers.pds_b_did },
  // B advertises A's user domain beside its own since its restart
  user_domains: { [A]: ['.pds-a.test'], [B]: ['.pds-b.test', '.pds-a.test'] },
  restarts,
  declarations: {
    [opal.did]: { name: 'opal', record: declared.opal, verified_hosts: [A], verified_domains: ['pds-a.test'], unverified: [] },
    // claims as instancemap reports them: hosts normalised, domains as written
    [otto.did]: { name: 'otto', record: declared.otto, verified_hosts: [B], verified_domains: [], unverified: [A, '.pds-a.test', `${opal.did}#atproto_labeler`] },
    // claims no host; its moderatesFor confirms opal's delegation
    [max.did]: { name: 'max', record: declared.max, verified_hosts: [], verified_domains: [], unverified: [] },
  },
  // what the lookups must answer (suite.py check_routes); the suite's DNS
  // gives mail.pds-a.test an MX
  routing: {
    member: mia.did,
    other_member: mel.did,
    mx: { 'mail.pds-a.test': 'mx.pds-a.test' },
    spam_first: ['operator_route', 'email', 'abuse@mail.pds-a.test'],
    delegate: `${max.did}#atproto_labeler`,
    unconfirmed: `${opal.did}#atproto_labeler`,
    security_contact: 'security@nomx.pds-a.test',
    hosting_contact: 'admin@pds-a.test',
    support_url: `${A}/xrpc/_health`,
  },
  memberships,
  invalid_records: invalidRecords,
  // The instance of each PDS, anchored by the user domain it is proven to
  // issue handles under (accounts created on it whose handles verify both
  // ways; a declaration is not an anchor), named by its operator's verified
  // declaration. otto's claim on A and A's user domain, advertised by B,
  // join nothing, rename nothing, move no account.
  instances: {
    [A]: { anchor: 'ud:pds-a.test', name: declared.opal.name, hosts: [A], operator: opal.did, unproven: [],
      declared_members: Object.values(memberships).filter((m) => m.counted && m.operator === opal.did).length },
    // otto's declared name "Totally PDS A" reads as A's domain, so it is
    // refused and B takes the name its own proven domain gives
    [B]: { anchor: 'ud:pds-b.test', name: 'pds-b.test', hosts: [B], operator: otto.did, unproven: ['pds-a.test'],
      name_refused: declared.otto.name,
      declared_members: Object.values(memberships).filter((m) => m.counted && m.operator === otto.did).length },
  },
}
console.log(JSON.stringify(summary, null, 2))
say(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
