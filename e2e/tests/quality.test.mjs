// The console's quality bar, checked on every page a customer or admin uses,
// with real content (an account, a provisioned network, its appliances):
// every control has a label, text has WCAG AA contrast, nothing overflows a
// phone's width, and the keyboard alone reaches and shows every control.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withStack } from '../lib/stack.mjs';
import { Customer } from '../lib/moto.mjs';
import { registerAgent } from '../lib/appliance.mjs';
import { signIn, hydrated, ARTIFACTS } from '../lib/browser.mjs';

const stack = withStack();

/** A signed-in JSON call from the page's session (cookie + Origin). */
async function api(page, method, path, body) {
  const res = await page.request.fetch(`${stack.server.url}${path}`, {
    method, data: body, headers: { origin: stack.server.url },
  });
  assert.ok(res.ok(), `${method} ${path}: ${res.status()} ${await res.text()}`);
  return res.json();
}

/** A network with two provisioned sites whose appliances report up. */
async function readyNetwork(page) {
  const customer = await Customer.create(stack.moto);
  await customer.vpc('us-east-1', '10.1.0.0/16', 'app-east');
  await customer.vpc('eu-west-1', '10.2.0.0/16', 'app-west');
  const key = await customer.kmsKey('us-east-1');
  await api(page, 'POST', '/api/v1/accounts', { account_id: customer.account, role_arn: customer.roleArn, label: 'Production' });
  const [account] = await api(page, 'GET', '/api/v1/accounts');
  const sites = [];
  for (const [region, name] of [['us-east-1', 'app-east'], ['eu-west-1', 'app-west']]) {
    const vpcs = await api(page, 'GET', `/api/v1/accounts/${account.id}/vpcs?region=${region}`);
    const vpc = vpcs.find((v) => v.name === name);
    sites.push({ account_id: customer.account, region, vpc_id: vpc.vpc_id, role: 'edge' });
  }
  const net = await api(page, 'POST', '/api/v1/networks', {
    name: 'quality mesh', topology: 'full_mesh', sites, options: { kms_key_arn: key },
  });
  const plan = await api(page, 'GET', `/api/v1/networks/${net.id}/plan?kind=apply`);
  await api(page, 'POST', `/api/v1/networks/${net.id}/apply`, { fingerprint: plan.fingerprint });
  const deadline = Date.now() + 120_000;
  let ready;
  while ((ready = await api(page, 'GET', `/api/v1/networks/${net.id}`)).status !== 'ready') {
    assert.ok(Date.now() < deadline, `the network never got ready: ${ready.status}`);
    await new Promise((r) => setTimeout(r, 500));
  }
  for (const site of ready.sites) {
    await registerAgent(stack.server, customer, site);
  }
  return net.id;
}

/** Controls without an accessible name, described. */
function unlabeled() {
  const named = (el) => {
    const by = el.getAttribute('aria-labelledby');
    const text = (n) => n?.textContent?.trim();
    return el.getAttribute('aria-label')?.trim()
      || (by && by.split(/\s+/).map((id) => text(document.getElementById(id))).join(' ').trim())
      || (el.id && text(document.querySelector(`label[for="${CSS.escape(el.id)}"]`)))
      || text(el.closest('label'))
      || (el.tagName === 'BUTTON' && text(el))
      || el.getAttribute('title');
  };
  return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
    .filter((el) => el.getClientRects().length > 0 && !named(el))
    .map((el) => el.outerHTML.slice(0, 120));
}

/** Text below WCAG AA contrast (4.5:1, or 3:1 for large text), described. */
function lowContrast() {
  const parse = (c) => {
    const m = c.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/);
    return m ? { rgb: [+m[1], +m[2], +m[3]], a: m[4] === undefined ? 1 : +m[4] } : null;
  };
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let n = el; n; n = n.parentElement) {
      const bg = parse(getComputedStyle(n).backgroundColor);
      if (bg && bg.a > 0.5) return bg.rgb;
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.getClientRects().length === 0 || el.closest('[disabled], [aria-hidden=true]')) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || +style.opacity === 0) continue;
    const svg = el instanceof SVGElement;
    const fg = parse(svg ? style.fill : style.color);
    if (!fg) continue;
    const bg = background(svg ? el.ownerSVGElement ?? el : el);
    const [l1, l2] = [lum(fg.rgb), lum(bg)].sort((a, b) => b - a);
    const ratio = (l1 + 0.05) / (l2 + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && +style.fontWeight >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      out.push(`${ratio.toFixed(2)}:1 "${el.textContent.trim().slice(0, 40)}" <${el.tagName.toLowerCase()} class="${el.getAttribute('class') ?? ''}">`);
    }
  }
  return out;
}

/** What sticks out past the right edge of the screen, outermost first. */
function overflow() {
  const wide = document.documentElement.scrollWidth - window.innerWidth;
  if (wide <= 1) return [];
  const clipped = (el) => {
    for (let n = el.parentElement; n; n = n.parentElement) {
      if (['auto', 'scroll', 'hidden'].includes(getComputedStyle(n).overflowX)) return true;
    }
    return false;
  };
  const out = [...document.querySelectorAll('body *')]
    .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 1 && !clipped(el))
    .filter((el, _, all) => !all.includes(el.parentElement))
    .slice(0, 4)
    .map((el) => `<${el.tagName.toLowerCase()} id="${el.id}" class="${el.getAttribute('class') ?? ''}"> to ${Math.round(el.getBoundingClientRect().right)}px`);
  return [`${wide}px wider than a ${window.innerWidth}px screen: ${out.join('; ')}`];
}

test('every page: labelled controls, AA contrast, no sideways scrolling on a phone, keyboard reachable with visible focus', async () => {
  const page = await stack.browser.newPage({ viewport: { width: 1280, height: 900 } });
  const signInProblems = { labels: await (async () => {
    await page.goto(`${stack.server.url}/sign-in`);
    return page.evaluate(unlabeled);
  })(), contrast: await page.evaluate(lowContrast) };
  assert.deepEqual(signInProblems, { labels: [], contrast: [] }, 'the sign-in page');
  // The checks find what they look for: a grey-on-white line, a bare
  // input and a too-wide block, put in and taken out again.
  await page.evaluate(() => {
    const probe = document.createElement('div');
    probe.id = 'probe';
    // Styles through the CSSOM: the page's CSP refuses style attributes.
    const faint = document.createElement('p');
    faint.textContent = 'faint';
    Object.assign(faint.style, { color: '#aaa', background: '#fff' });
    const wide = document.createElement('div');
    wide.textContent = 'wide';
    wide.style.width = '2000px';
    probe.append(faint, document.createElement('input'), wide);
    document.body.append(probe);
  });
  assert.equal((await page.evaluate(lowContrast)).filter((p) => p.includes('faint')).length, 1);
  assert.equal((await page.evaluate(unlabeled)).length, 1);
  assert.equal((await page.evaluate(overflow)).length, 1);
  await page.evaluate(() => document.getElementById('probe').remove());

  // The keyboard alone signs in: Tab to each field, Enter submits.
  await hydrated(page);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'email');
  await page.keyboard.type(stack.server.email);
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'password');
  await page.keyboard.type(stack.server.password);
  await Promise.all([page.waitForURL(`${stack.server.url}/`), page.keyboard.press('Enter')]);
  await page.waitForSelector('h1:text("Dashboard")');

  const id = await readyNetwork(page);
  const pages = ['/', '/accounts', '/networks', '/networks/new', `/networks/${id}`, '/keys', '/admin'];
  const problems = {};
  for (const path of pages) {
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${stack.server.url}${path}`);
    await hydrated(page);
    const found = {
      labels: await page.evaluate(unlabeled),
      contrast: await page.evaluate(lowContrast),
    };
    // Every control the keyboard reaches shows where the focus is.
    const unfocusable = [];
    await page.evaluate(() => document.activeElement?.blur());
    const seen = new Set();
    for (let i = 0; i < 80; i++) {
      await page.keyboard.press('Tab');
      const f = await page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return null;
        const s = getComputedStyle(el);
        const visible = (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2) || s.boxShadow !== 'none';
        return { key: el.outerHTML.slice(0, 100), visible };
      });
      if (!f || seen.has(f.key)) break;
      seen.add(f.key);
      if (!f.visible) unfocusable.push(f.key);
    }
    found.focus = unfocusable;
    found.reached = seen.size > 0 ? [] : ['nothing is reachable with Tab'];
    await page.setViewportSize({ width: 375, height: 812 });
    await page.waitForTimeout(100);
    found.overflow = await page.evaluate(overflow);
    if (path === `/networks/${id}`) {
      await page.screenshot({ path: `${ARTIFACTS}/30-network-phone.png`, fullPage: true });
    }
    for (const [k, v] of Object.entries(found)) {
      if (v.length) (problems[path] ??= {})[k] = v;
    }
  }
  assert.deepEqual(problems, {}, JSON.stringify(problems, null, 2));
});
