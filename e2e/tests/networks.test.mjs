// The whole flow a new user takes, in a real browser against the real server,
// Postgres and moto: add an account, build a 3-region full mesh in the wizard,
// read the plan, Provision, watch it reach "ready" on the graph, delete it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withStack } from '../lib/stack.mjs';
import { Customer } from '../lib/moto.mjs';
import { registerAgent } from '../lib/appliance.mjs';
import { watchErrors, signIn, hydrated, ARTIFACTS } from '../lib/browser.mjs';

const stack = withStack();

const REGIONS = [['us-east-1', '10.1.0.0/16'], ['eu-west-1', '10.2.0.0/16'], ['ap-southeast-2', '10.3.0.0/16']];

test('a 3-region full mesh from the wizard to ready, then deleted', async () => {
  const customer = await Customer.create(stack.moto);
  for (const [region, cidr] of REGIONS) await customer.vpc(region, cidr, `app-${region}`);
  await customer.vpc('us-east-1', '10.2.128.0/17', 'overlapping'); // clashes with eu-west-1's
  const key = await customer.kmsKey('us-east-1', 'alias/e2e-network');

  const page = await stack.browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = watchErrors(page);
  await signIn(page, stack.server);
  await page.goto(`${stack.server.url}/accounts`);
  await hydrated(page);
  await page.fill('#account-id', customer.account);
  await page.fill('#role-arn', customer.roleArn);
  await page.click('#add-account-form button[type=submit]');
  await page.waitForSelector(`#accounts-table tr[data-account="${customer.account}"]`);

  await page.click('nav >> text=Networks');
  await page.waitForSelector('h2:text("No networks yet")');
  await page.click('#new-network');
  await page.waitForSelector('h1:text("New network")');
  await hydrated(page);
  await page.fill('#network-name', 'global mesh');

  for (const [region] of REGIONS) {
    await page.selectOption('#pick-region', region);
    await page.click('#find-vpcs');
    await page.waitForSelector(`#vpc-list caption:text("VPCs in ${region}")`);
    await page.click(`#vpc-list tr:has-text("app-${region}") button.add-vpc`);
  }
  assert.equal(await page.locator('#picked-sites tbody tr').count(), 3);
  // The key picker lists the first site's account's keys in its region;
  // another region has none; picking by alias fills the ARN field.
  await page.waitForSelector('#kms-key-hint:text("1 key in us-east-1")');
  assert.equal(await page.getAttribute('#kms-keys option', 'label'), 'alias/e2e-network');
  await page.selectOption('#kms-key-region', 'eu-west-1');
  await page.waitForSelector('#kms-key-hint:text("0 keys in eu-west-1")');
  await page.selectOption('#kms-key-region', 'us-east-1');
  await page.waitForSelector('#kms-key-hint:text("1 key in us-east-1")');
  await page.selectOption('#kms-key-pick', { label: 'alias/e2e-network' });
  assert.equal(await page.inputValue('#kms-key'), key);
  // The overlapping VPC is flagged as you pick and cannot be added.
  await page.selectOption('#pick-region', 'us-east-1');
  await page.click('#find-vpcs');
  await page.waitForSelector('#vpc-list caption:text("VPCs in us-east-1")');
  const clash = page.locator('#vpc-list tr:has-text("overlapping")');
  assert.match(await clash.textContent(), /overlaps eu-west-1 app-eu-west-1/);
  assert.equal(await clash.locator('button.add-vpc').isDisabled(), true);

  // Transit without a hub is explained inline and creates nothing.
  await page.check('#topology-transit');
  await page.waitForSelector('#site-warnings li:text("A transit network needs a hub")');
  await page.click('#create-network');
  await page.waitForSelector('#create-error');
  assert.match(await page.textContent('#create-error'), /hub/);
  assert.deepEqual(await page.evaluate(async () => (await fetch('/api/v1/networks')).json()), []);
  await page.screenshot({ path: `${ARTIFACTS}/20-wizard-transit-without-hub.png`, fullPage: true });

  await page.check('#topology-full_mesh');
  await page.screenshot({ path: `${ARTIFACTS}/21-wizard-full-mesh.png`, fullPage: true });
  await page.click('#create-network');
  await page.waitForURL(/\/networks\/[0-9a-f-]{36}$/);
  await page.waitForSelector('#plan-table');
  assert.equal(await page.locator('#plan-table tbody tr').count(), 9, 'address stack, appliance stack and routes per region');
  assert.equal((await page.textContent('#network-status')).trim(), 'planned');
  await page.screenshot({ path: `${ARTIFACTS}/22-plan.png`, fullPage: true });

  await hydrated(page);
  const clicked = Date.now();
  await page.click('#provision');
  await page.waitForSelector('#network-status:text("ready")', { timeout: 120_000 });
  const provisionMs = Date.now() - clicked;
  console.log(`Provision to ready: ${provisionMs} ms`);
  assert.equal(await page.locator('#topology-graph g.node').count(), 3);
  assert.equal(await page.locator('#topology-graph line[data-tunnel]').count(), 3);
  assert.match(await page.textContent('#progress-text'), /9 of 9 steps/);
  await page.screenshot({ path: `${ARTIFACTS}/23-ready.png`, fullPage: true });
  assert.equal(await page.locator('#topology-graph line[data-tunnel="pending"]').count(), 3);
  await page.waitForSelector('#appliances-empty');

  // The appliances register and report their tunnels up: the page shows them
  // and turns the tunnels green by itself (live refresh, no reload).
  const networkId = page.url().split('/').pop();
  const net = await page.evaluate(async (id) => (await fetch(`/api/v1/networks/${id}`)).json(), networkId);
  const agents = [];
  for (const site of net.sites) {
    agents.push(await registerAgent(stack.server, customer, site));
  }
  await page.waitForSelector('#topology-graph line[data-tunnel="up"] >> nth=2', { state: 'attached', timeout: 15_000 });
  assert.equal(await page.locator('#appliances-table tbody tr').count(), 3);
  for (const { instanceId } of agents) {
    assert.match(await page.textContent(`#appliances-table tr[data-appliance="${instanceId}"]`), /active.*up · 101 \/ 101/s);
  }
  await page.screenshot({ path: `${ARTIFACTS}/23a-appliances-up.png`, fullPage: true });

  // Rotate the key, make-before-break: confirmed first; epoch 1 keeps being
  // accepted (retiring) while the appliances take epoch 2 on.
  await page.check('#confirm-rotate');
  await page.click('#rotate-key');
  await page.waitForSelector('#keys-table tr[data-epoch="2"]:has-text("active")');
  assert.match(await page.textContent('#keys-table tr[data-epoch="1"]'), /retiring/);
  assert.match(await page.textContent('#rotation-progress'), /0 of 3 live appliances accept it/);
  assert.match(await page.textContent('#rotation-waiting summary'), /Waiting for 3 appliance/);
  assert.equal(await page.locator('#rotate-key').count(), 0, 'one rotation at a time');
  // The appliances accept both epochs: the page turns every tunnel rekeying
  // by itself; a second round moves every sender to epoch 2.
  for (const a of agents) await a.follow();
  await page.waitForSelector('#topology-graph line[data-tunnel="rekeying"] >> nth=2', { state: 'attached', timeout: 15_000 });
  await page.waitForSelector('#rotation-progress:has-text("3 of 3 live appliances accept it")', { timeout: 15_000 });
  await page.screenshot({ path: `${ARTIFACTS}/23b-rekeying.png`, fullPage: true });
  for (const a of agents) assert.ok((await a.follow()).tunnels.every((t) => t.out.epoch === 2));
  // Everyone sends with epoch 2: after the grace period epoch 1 retires,
  // the appliances drop it, and the tunnels are up again.
  const rotated = Date.now();
  while (!(await page.textContent('#keys-table tr[data-epoch="1"]')).includes('retired')) {
    assert.ok(Date.now() - rotated < 30_000, 'epoch 1 never retired');
    for (const a of agents) await a.follow();
    await new Promise((r) => setTimeout(r, 1000));
  }
  for (const a of agents) assert.deepEqual((await a.follow()).keys.map((k) => k.epoch), [2]);
  await page.waitForSelector('#topology-graph line[data-tunnel="up"] >> nth=2', { state: 'attached', timeout: 15_000 });
  assert.equal(await page.locator('#rotation-progress').count(), 0);
  await page.screenshot({ path: `${ARTIFACTS}/23c-rotated.png`, fullPage: true });
  // The retired epoch can be revoked, after a confirmation.
  const retired = page.locator('#keys-table tr[data-epoch="1"]');
  await retired.locator('button:text("Invalidate")').click();
  assert.match(await retired.textContent(), /retired/, 'nothing happens unconfirmed');
  await retired.locator('input[type=checkbox]').check();
  await retired.locator('button:text("Invalidate")').click();
  await page.waitForSelector('#keys-table tr[data-epoch="1"]:has-text("invalidated")');
  // Automatic rotation: every 30 days, the next one dated from epoch 2.
  assert.match(await page.textContent('#rotation-schedule'), /Automatic rotation is off/);
  await page.fill('#rotate-every', '30');
  await page.click('#save-schedule');
  await page.waitForSelector('#rotation-schedule:has-text("Rotates automatically every 30 days; next at")');
  await page.screenshot({ path: `${ARTIFACTS}/23d-schedule.png`, fullPage: true });

  await page.fill('#confirm-name', 'global mesh');
  await page.click('#delete-network');
  await page.waitForSelector('#network-status:text("deleted")', { timeout: 120_000 });
  await page.screenshot({ path: `${ARTIFACTS}/24-deleted.png`, fullPage: true });
  assert.deepEqual(await page.evaluate(async () => (await fetch('/api/v1/networks')).json()), []);

  // The refused transit attempt is a 400 the browser logs; nothing else may fail.
  assert.deepEqual(errors.filter((e) => !e.includes('status of 400')), [], 'no script errors or CSP violations');
});
