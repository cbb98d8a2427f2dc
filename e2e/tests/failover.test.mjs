// High availability in a real browser against the real server, Postgres and
// moto: a site's two appliances (simulated over the real appliance API)
// report active and passive; the admin sees who is active and since when,
// asks for "Fail over now" (nothing happens unconfirmed, a second ask while
// one is in progress is refused with a message), the passive member finds
// the request in its config and carries it out, and the history shows it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withStack } from '../lib/stack.mjs';
import { Customer } from '../lib/moto.mjs';
import { watchErrors, signIn, hydrated, ARTIFACTS } from '../lib/browser.mjs';

const stack = withStack();

/** A signed-in JSON call from the page's session (cookie + Origin). */
async function api(page, method, path, body) {
  const res = await page.request.fetch(`${stack.server.url}${path}`, {
    method, data: body, headers: { origin: stack.server.url },
  });
  assert.ok(res.ok(), `${method} ${path}: ${res.status()} ${await res.text()}`);
  return res.json();
}

const field = (xml, name) => xml.match(new RegExp(`<${name}>([^<]*)</${name}>`))?.[1] ?? '';

/** The bootstrap token and instance of one member ('a' or 'b') of a site, from moto. */
async function memberOf(customer, region, siteId, member) {
  const lts = await customer.ec2(region, { Action: 'DescribeLaunchTemplates' });
  for (const item of lts.split('<item>').slice(1)) {
    const [id, name] = [field(item, 'launchTemplateId'), field(item, 'launchTemplateName')];
    if (!name.startsWith('vpcmesh-') || !name.endsWith(`-${member}`)) continue;
    const versions = await customer.ec2(region, {
      Action: 'DescribeLaunchTemplateVersions', LaunchTemplateId: id, 'LaunchTemplateVersion.1': '$Latest',
    });
    const userData = Buffer.from(versions.match(/<userData>([^<]*)<\/userData>/)[1], 'base64').toString();
    if (!userData.includes(siteId)) continue;
    const instances = await customer.ec2(region, {
      Action: 'DescribeInstances',
      'Filter.1.Name': 'tag:vpcmesh:site', 'Filter.1.Value.1': siteId,
      'Filter.2.Name': 'tag:vpcmesh:member', 'Filter.2.Value.1': member,
      'Filter.3.Name': 'instance-state-name', 'Filter.3.Value.1': 'running',
    });
    return {
      token: userData.match(/"bootstrap_token": "([^"]+)"/)[1],
      instanceId: field(instances, 'instanceId'),
      az: field(instances, 'availabilityZone'),
      privateIp: field(instances, 'privateIpAddress'),
    };
  }
  throw new Error(`no member-${member} launch template for site ${siteId} in ${region}`);
}

async function call(path, body, credential) {
  const headers = { 'content-type': 'application/json' };
  if (credential) headers.authorization = `Bearer ${credential}`;
  const res = await fetch(`${stack.server.url}/api/appliance/v1${path}`, {
    method: body === undefined ? 'GET' : 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}

/** A member registered as the agent registers; `report` sends its HA status. */
async function join(customer, site, member) {
  const m = await memberOf(customer, site.region, site.id, member);
  const reg = await call('/register', {
    bootstrap_token: m.token, instance_id: m.instanceId, availability_zone: m.az,
    private_ip: m.privateIp, agent_version: 'e2e',
  });
  // As the agent says it: how long it has had its role, on its own clock.
  let role = null;
  let since = Date.now() - 90_000;
  return {
    instanceId: m.instanceId,
    config: () => call('/config?protocol=4', undefined, reg.credential),
    report: (haRole, reason, takeOverDone = null) => {
      if (role !== null && role !== haRole) since = Date.now();
      role = haRole;
      return call('/status', {
        agent_version: 'e2e', applied_version: null, ha_role: haRole, epochs: [1], tunnels: [],
        ha: { reason, role_for_ms: Date.now() - since, take_over_done: takeOverDone, partner_heard_ms_ago: 50 },
      }, reg.credential);
    },
  };
}

test('an admin fails a site over after a confirmation and the history shows it', async () => {
  const customer = await Customer.create(stack.moto);
  await customer.vpc('us-east-1', '10.1.0.0/16', 'ha-east');
  await customer.vpc('eu-west-1', '10.2.0.0/16', 'ha-west');
  const key = await customer.kmsKey('us-east-1');
  const page = await stack.browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = watchErrors(page);
  await signIn(page, stack.server);
  await api(page, 'POST', '/api/v1/accounts', { account_id: customer.account, role_arn: customer.roleArn, label: 'HA' });
  const [account] = await api(page, 'GET', '/api/v1/accounts');
  const sites = [];
  for (const [region, name] of [['us-east-1', 'ha-east'], ['eu-west-1', 'ha-west']]) {
    const vpcs = await api(page, 'GET', `/api/v1/accounts/${account.id}/vpcs?region=${region}`);
    sites.push({ account_id: customer.account, region, vpc_id: vpcs.find((v) => v.name === name).vpc_id, role: 'edge' });
  }
  const net = await api(page, 'POST', '/api/v1/networks', {
    name: 'ha mesh', topology: 'full_mesh', sites, options: { kms_key_arn: key },
  });
  const plan = await api(page, 'GET', `/api/v1/networks/${net.id}/plan?kind=apply`);
  await api(page, 'POST', `/api/v1/networks/${net.id}/apply`, { fingerprint: plan.fingerprint });
  const deadline = Date.now() + 120_000;
  let ready;
  while ((ready = await api(page, 'GET', `/api/v1/networks/${net.id}`)).status !== 'ready') {
    assert.ok(Date.now() < deadline, `the network never got ready: ${ready.status}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  const east = ready.sites.find((s) => s.region === 'us-east-1');
  const a = await join(customer, east, 'a');
  const b = await join(customer, east, 'b');
  // Both keep reporting (so the health monitor has nothing to do).
  let aRole = ['active', 'holds_address'];
  let bRole = ['passive', 'partner_active'];
  let bDone = null;
  const beat = async () => { await a.report(...aRole); await b.report(...bRole, bDone); };
  await beat();
  const alive = setInterval(() => beat().catch(() => {}), 2_000);
  try {
    await page.goto(`${stack.server.url}/networks/${net.id}`);
    await hydrated(page);
    const row = page.locator(`#ha-sites-table tr[data-site="${east.id}"]`);
    await row.waitFor();
    assert.match(await row.textContent(), new RegExp(`A \\(${a.instanceId}\\).*since .* UTC · holds the Elastic IP`, 's'));
    assert.match(await page.textContent(`#appliances-table tr[data-appliance="${b.instanceId}"]`), /passive.*standby: partner holds the Elastic IP/s);
    assert.equal(await page.locator('#failovers-empty').count(), 1);

    // Unconfirmed, the button asks nothing; confirmed, the request is made.
    await row.locator('button.fail-over').click();
    assert.equal(await page.locator('#failover-result').count(), 0, 'nothing happens unconfirmed');
    assert.equal((await b.config()).ha.take_over, undefined);
    await row.locator('input.confirm-fail-over').check();
    await row.locator('button.fail-over').click();
    await page.waitForSelector('#failover-result');
    assert.match(await page.textContent('#failover-result'), new RegExp(`Asked member B \\(${b.instanceId}\\) to take over \\(request 1\\)`));
    await page.waitForSelector(`#ha-sites-table tr[data-site="${east.id}"] td.takeover:has-text("is taking over")`);
    assert.equal(await row.locator('input.confirm-fail-over').isChecked(), false, 'each ask is confirmed on its own');
    await page.screenshot({ path: `${ARTIFACTS}/50-fail-over-asked.png`, fullPage: true });
    // Asking again while it is in progress is refused, with the reason.
    await row.locator('input.confirm-fail-over').check();
    await row.locator('button.fail-over').click();
    await page.waitForSelector('#failover-error');
    assert.match(await page.textContent('#failover-error'), /is not done yet/);
    assert.equal(await row.locator('input.confirm-fail-over').isChecked(), false);

    // The passive member finds the request in its config and carries it out.
    const config = await b.config();
    assert.equal(config.ha.take_over, 1);
    assert.equal(config.ha.partner.instance_id, a.instanceId);
    bRole = ['active', 'requested'];
    bDone = 1;
    aRole = ['passive', 'address_taken'];
    await beat();
    // The page refreshes by itself: the history and the new roles show.
    const entry = page.locator('#failovers-table tbody tr[data-reason="requested"]');
    await entry.waitFor({ timeout: 15_000 });
    const text = await entry.textContent();
    assert.match(text, new RegExp(`A \\(${a.instanceId}\\) → B \\(${b.instanceId}\\)`));
    assert.match(text, /took over on request/);
    assert.match(text, new RegExp(stack.server.email.replace(/[.]/g, '\\.')));
    assert.match(await page.textContent(`#ha-sites-table tr[data-site="${east.id}"]`), new RegExp(`B \\(${b.instanceId}\\).*took over on request`, 's'));
    await page.screenshot({ path: `${ARTIFACTS}/51-failover-history.png`, fullPage: true });
  } finally {
    clearInterval(alive);
  }
  // The refused second ask is a 409 the browser logs; nothing else may fail.
  assert.deepEqual(errors.filter((e) => !e.includes('status of 409')), [], 'no script errors or CSP violations');
});
