// A newcomer's first minutes, on the stack exactly as `./run.sh` starts it:
// moto, the console with its demo network, and the live lab whose instances
// boot from their own user data in a User-Mode Linux guest. Nothing here
// registers an appliance or fakes a tunnel: the demo network's tunnels must
// turn up by themselves, and Check connectivity must find every pair green.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, chmodSync, rmSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { freePort } from '../lib/server.mjs';
import { launch, watchErrors, signIn, hydrated, ARTIFACTS } from '../lib/browser.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ADMIN = 'newcomer@demo.vpcmesh.dev';
let run;
let browser;
let output = '';
let started;
let passed = false;
const netns = `vpcmesh-lab-e2e-${process.pid}`;

before(async () => {
  assert.equal(process.getuid(), 0, 'the lab needs root (namespaces, a tap): run ./test.sh as root');
  const data = mkdtempSync('/tmp/vpcmesh-newcomer-');
  chmodSync(data, 0o755);
  const port = await freePort();
  started = Date.now();
  run = {
    url: `http://127.0.0.1:${port}`,
    data,
    child: spawn(`${ROOT}/run.sh`, [], {
      // test.sh built everything already; run.sh would only rebuild it.
      env: {
        ...process.env, VPCMESH_SKIP_BUILD: '1', VPCMESH_DATA: data, VPCMESH_LISTEN: `127.0.0.1:${port}`,
        VPCMESH_MOTO_PORT: String(await freePort()), VPCMESH_LAB_NETNS: netns, VPCMESH_DEMO_ADMIN: ADMIN,
        RUST_LOG: 'info', RUST_LIB_BACKTRACE: '0',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    }),
  };
  run.child.stdout.on('data', (d) => (output += d));
  run.child.stderr.on('data', (d) => (output += d));
  const deadline = Date.now() + 120_000;
  while (!output.match(/with password (\S+)/)) {
    if (run.child.exitCode !== null) throw new Error(`run.sh exited early:\n${output}`);
    if (Date.now() > deadline) throw new Error(`run.sh printed no sign-in within 120 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  run.password = output.match(/with password (\S+)/)[1];
  // The password comes first; the console listens once the demo is seeded.
  while (!(await fetch(`${run.url}/readyz`).then((r) => r.ok, () => false))) {
    if (run.child.exitCode !== null) throw new Error(`run.sh exited early:\n${output}`);
    if (Date.now() > deadline) throw new Error(`the console did not answer within 120 s:\n${output}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  browser = await launch();
});

after(async () => {
  await browser?.close();
  if (run?.child.exitCode === null) {
    run.child.kill('SIGTERM');
    await once(run.child, 'exit');
  }
  // Stopping run.sh stops the lab: its namespace and guest are gone.
  const left = execFileSync('ip', ['netns', 'list']).toString();
  assert.ok(!left.includes(netns), `the lab's namespace outlived ./run.sh:\n${left}`);
  // Kept when the test failed: the lab's logs and timeline are in it.
  if (passed) rmSync(run.data, { recursive: true, force: true });
  else console.log(`kept ${run.data} (lab logs in lab/, lab.log, and the timeline in lab/lab.json)`);
});

test("the demo network's tunnels come up by themselves and every pair answers through them", async () => {
  const page = await browser.newPage();
  const errors = watchErrors(page);
  await signIn(page, { url: run.url, email: ADMIN, password: run.password });
  await page.goto(`${run.url}/networks`);
  await page.click('a:text("demo mesh")');
  await page.waitForURL(/\/networks\/[0-9a-f-]{36}$/);
  await hydrated(page);
  // Live refresh: no reload while the instances boot, install and register.
  await page.waitForSelector('#topology-graph line[data-tunnel="up"] >> nth=2', { state: 'attached', timeout: 180_000 });
  const upMs = Date.now() - started;
  console.log(`./run.sh start to every demo tunnel up on the console: ${upMs} ms`);
  console.log(phases(upMs));
  await page.screenshot({ path: `${ARTIFACTS}/40-newcomer-tunnels-up.png`, fullPage: true });

  await page.click('#check-connectivity');
  await page.waitForSelector('#connectivity-summary[data-running="false"]', { timeout: 60_000 });
  const states = await page.locator('#connectivity-table tr[data-pair]').evaluateAll((rows) => rows.map((r) => r.dataset.state));
  await page.screenshot({ path: `${ARTIFACTS}/41-newcomer-connectivity.png`, fullPage: true });
  assert.deepEqual(states, ['ok', 'ok', 'ok'], `every pair of the 3 regions answers:\n${await page.textContent('#connectivity')}`);
  assert.deepEqual(errors, []);
  passed = true;
});

function lastPing(pings) {
  const v = Object.values(pings ?? {});
  return v.length ? Math.max(...v) : null;
}

// Where the minute went: the lab's timeline (lab.json) and the server's log
// lines (tracing's RFC 3339 times), in seconds after ./run.sh was spawned.
function phases(upMs) {
  const t0 = started / 1000;
  const at = (t) => (t == null ? '-' : (t - t0).toFixed(1));
  const plain = output.replace(/\x1b\[[0-9;]*m/g, '');
  const logged = (re) => {
    const line = plain.split('\n').find((l) => re.test(l));
    const time = line?.match(/^(\d{4}-\d\d-\d\dT[\d:.]+Z)/)?.[1];
    return time ? Date.parse(time) / 1000 : null;
  };
  let lab = {};
  try {
    lab = JSON.parse(readFileSync(`${run.data}/lab/lab.json`, 'utf8')).timeline ?? {};
  } catch (e) {
    return `no lab timeline: ${e.message}`;
  }
  const rows = [
    ['lab started', lab.started],
    ['guest booted', lab.guest_booted],
    ['AWS emulator answers', lab.aws_answered],
    ['console answers (/readyz)', lab.control_plane_answered],
    ["Provision: the demo network's job started (as the button starts it)", logged(/job started/)],
    ['demo network provisioned (job finished)', logged(/job finished/)],
    ['first instance seen in the emulator', lab.first_instance_seen],
    ['first encrypted ping between test hosts', lab.first_ping],
    [`last of ${Object.keys(lab.pings ?? {}).length} host pairs' first ping`, lastPing(lab.pings)],
    ['every tunnel up on the console', t0 + upMs / 1000],
  ];
  const lines = rows.map(([what, t]) => `  ${at(t).padStart(6)} s  ${what}`);
  const provision = logged(/job started/);
  if (provision != null && lab.first_ping != null) {
    lines.push(`  Provision to the first encrypted ping between two regions: ${(lab.first_ping - provision).toFixed(1)} s`);
  }
  lines.push('  per instance: seen, mirrored, user data, agent installed, agent running, registered, config applied');
  for (const [id, i] of Object.entries(lab.instances ?? {})) {
    const cols = ['seen', 'mirrored', 'user_data', 'agent_installed', 'agent_running', 'registered', 'config_applied'];
    lines.push(`  ${id}: ${cols.map((c) => at(i[c]).padStart(6)).join(' ')}`);
  }
  return `phases (seconds after ./run.sh started):\n${lines.join('\n')}`;
}
