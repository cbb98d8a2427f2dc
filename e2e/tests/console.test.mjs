// The console in a real browser against the real server and Postgres.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../lib/server.mjs';
import { launch, watchErrors, clickUntil, ARTIFACTS } from '../lib/browser.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  const code = await server?.stop();
  assert.equal(code, 0, `graceful shutdown on SIGTERM; server output:\n${server?.output()}`);
});

test('a user signs in through the page, lands on the dashboard, and hydrated controls respond', async () => {
  const page = await browser.newPage();
  const errors = watchErrors(page);

  await page.goto(`${server.url}/`);
  assert.equal(new URL(page.url()).pathname, '/sign-in', 'signed-out visitors land on sign-in');
  assert.equal(await page.title(), 'Sign in · vpcmesh');

  // Only a hydrated page reacts to "Show": the server-rendered button has no handler.
  const password = page.locator('#password');
  await clickUntil(page, '#toggle-password', async () => (await password.getAttribute('type')) === 'text');
  assert.equal(await page.locator('#toggle-password').textContent(), 'Hide');
  await page.click('#toggle-password');
  assert.equal(await password.getAttribute('type'), 'password');

  await page.fill('#email', server.email);
  await page.fill('#password', server.password);
  await page.screenshot({ path: `${ARTIFACTS}/01-sign-in.png` });
  await Promise.all([page.waitForURL(`${server.url}/`), page.click('button[type=submit]')]);

  await page.waitForSelector('h1:text("Dashboard")');
  assert.match(await page.textContent('.user-menu'), /Demo Admin/);
  assert.match(await page.textContent('.cards'), /Users/);

  // A client-side interaction: the checklist folds and unfolds without a request.
  assert.equal(await page.isVisible('#checklist'), true);
  await page.click('#toggle-checklist');
  await page.waitForSelector('#checklist', { state: 'detached' });
  assert.equal(await page.textContent('#toggle-checklist'), 'Show steps');
  await page.click('#toggle-checklist');
  await page.waitForSelector('#checklist');
  await page.screenshot({ path: `${ARTIFACTS}/02-dashboard.png`, fullPage: true });

  // Client-side navigation to Admin lists the organization's users.
  await page.click('nav >> text=Admin');
  await page.waitForSelector(`td:text("${server.email}")`);
  assert.equal(new URL(page.url()).pathname, '/admin');
  await page.screenshot({ path: `${ARTIFACTS}/03-admin.png`, fullPage: true });

  assert.deepEqual(errors, [], 'no script errors or CSP violations');
  await page.close();
});

test('a wrong password is shown next to the form and nobody is signed in', async () => {
  const page = await browser.newPage();
  await page.goto(`${server.url}/sign-in`);
  await clickUntil(page, '#toggle-password', async () => (await page.getAttribute('#password', 'type')) === 'text');
  await page.fill('#email', server.email);
  await page.fill('#password', 'definitely not it');
  await page.click('button[type=submit]');
  const alert = page.locator('.field-error[role=alert]');
  await alert.waitFor();
  assert.equal(await alert.textContent(), 'Email or password is incorrect.');
  assert.equal(new URL(page.url()).pathname, '/sign-in');
  const me = await page.request.get(`${server.url}/api/v1/me`);
  assert.equal(me.status(), 401);
  await page.screenshot({ path: `${ARTIFACTS}/04-wrong-password.png` });
  await page.close();
});

test('an admin adds a user from the Admin page and the list updates in place', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${server.url}/sign-in`);
  await clickUntil(page, '#toggle-password', async () => (await page.getAttribute('#password', 'type')) === 'text');
  await page.fill('#email', server.email);
  await page.fill('#password', server.password);
  await Promise.all([page.waitForURL(`${server.url}/`), page.click('button[type=submit]')]);
  await page.click('nav >> text=Admin');
  await page.waitForSelector('#new-email');

  await page.fill('#new-name', 'Grace Hopper');
  await page.fill('#new-email', 'grace@demo.vpcmesh.dev');
  await page.selectOption('#new-role', 'member');
  await page.fill('#new-password', 'correct horse battery staple');
  await page.click('text=Add user');
  await page.waitForSelector('td:text("grace@demo.vpcmesh.dev")');

  // The same email again: a clear conflict, next to the form.
  await page.fill('#new-name', 'Grace Again');
  await page.fill('#new-email', 'grace@demo.vpcmesh.dev');
  await page.fill('#new-password', 'correct horse battery staple');
  await page.click('text=Add user');
  await page.waitForSelector('text=A user with the email grace@demo.vpcmesh.dev already exists.');
  await page.screenshot({ path: `${ARTIFACTS}/05-admin-add-user.png`, fullPage: true });

  // The audit log filters as you type.
  await page.waitForSelector('#audit-table code:text("user.created")');
  await page.fill('#audit-filter', 'user.created');
  await page.waitForFunction(() => [...document.querySelectorAll('#audit-table tbody tr')]
    .every((tr) => tr.textContent.includes('user.created')));
  assert.equal(await page.locator('#audit-table tbody tr').count(), 1);
  await page.fill('#audit-filter', 'no such thing');
  await page.waitForFunction(() => document.querySelectorAll('#audit-table tbody tr').length === 0);
  await page.screenshot({ path: `${ARTIFACTS}/06-admin-audit-filter.png`, fullPage: true });
  // The refused duplicate is a 409 the browser logs; nothing else may fail.
  assert.deepEqual(errors.filter((e) => !e.includes('status of 409')), []);
  await context.close();

  // Grace is a member: no Admin link, a clear refusal on the admin page and
  // its API, and a network that is not hers is simply not found.
  const memberContext = await browser.newContext();
  const member = await memberContext.newPage();
  await member.goto(`${server.url}/sign-in`);
  await member.fill('#email', 'grace@demo.vpcmesh.dev');
  await member.fill('#password', 'correct horse battery staple');
  await Promise.all([member.waitForURL(`${server.url}/`), member.click('button[type=submit]')]);
  await member.waitForSelector('h1:text("Dashboard")');
  assert.equal(await member.locator('nav >> text=Admin').count(), 0);
  const forbidden = await member.goto(`${server.url}/admin`);
  assert.equal(forbidden.status(), 403);
  await member.waitForSelector('text=Only organization admins can do this.');
  assert.ok(!(await member.content()).includes(server.email), 'no user data leaks to members');
  for (const path of ['/api/v1/users', '/api/v1/audit']) {
    assert.equal((await member.request.get(`${server.url}${path}`)).status(), 403, path);
  }
  const elsewhere = await member.goto(`${server.url}/networks/3f0c5a8e-1d2b-4c6d-9e7f-0a1b2c3d4e5f`);
  assert.equal(elsewhere.status(), 404);
  await member.waitForSelector('text=Network was not found.');
  await member.screenshot({ path: `${ARTIFACTS}/07-member-forbidden.png`, fullPage: true });
  await memberContext.close();
});

test('pages read without JavaScript, and the sign-in form works as a plain form', async () => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(`${server.url}/admin`);
  assert.equal(new URL(page.url()).pathname, '/sign-in');
  await page.fill('#email', server.email);
  await page.fill('#password', server.password);
  await page.click('button[type=submit]');
  await page.waitForURL(`${server.url}/admin`);
  assert.match(await page.textContent('h1'), /Admin/);
  assert.match(await page.textContent('body'), new RegExp(server.email));
  await page.screenshot({ path: `${ARTIFACTS}/06-no-javascript.png`, fullPage: true });
  await context.close();
});

async function signIn(context, email, password) {
  const page = await context.newPage();
  await page.goto(`${server.url}/sign-in`);
  await clickUntil(page, '#toggle-password', async () => (await page.getAttribute('#password', 'type')) === 'text');
  await page.fill('#email', email);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${server.url}/`), page.click('button[type=submit]')]);
  return page;
}

test('an admin makes a user a viewer, signs them out everywhere and removes them; users change their own password', async () => {
  const email = 'lin@demo.vpcmesh.dev';
  const first = 'first long passphrase here';
  const second = 'second long passphrase here';
  const adminContext = await browser.newContext();
  const admin = await signIn(adminContext, server.email, server.password);
  await admin.goto(`${server.url}/admin`);
  await admin.waitForSelector('#new-role');
  await admin.fill('#new-name', 'Lin Viewer');
  await admin.fill('#new-email', email);
  await admin.selectOption('#new-role', 'member');
  await admin.fill('#new-password', first);
  await admin.click('text=Add user');
  const row = admin.locator(`#users-table tr[data-email="${email}"]`);
  await row.waitFor();

  // Lin changes her password on her Account page; a second session of hers ends.
  const linContext = await browser.newContext();
  const lin = await signIn(linContext, email, first);
  const otherContext = await browser.newContext();
  const other = await signIn(otherContext, email, first);
  await lin.click('#my-account');
  await lin.waitForURL(`${server.url}/account`);
  await lin.fill('#current-password', first);
  await lin.fill('#new-password', second);
  await lin.fill('#confirm-password', second);
  await lin.click('#password-form button[type=submit]');
  await lin.waitForSelector('#password-changed');
  const otherNow = await other.goto(`${server.url}/networks`);
  assert.equal(new URL(other.url()).pathname, '/sign-in', `the other session ended (${otherNow.status()})`);
  await otherContext.close();

  // Made a viewer: the next page Lin opens offers no New network.
  await row.locator('select[name=role]').selectOption('viewer');
  await row.locator('button:text("Change")').click();
  for (let i = 0; ; i++) {
    const users = await (await admin.request.get(`${server.url}/api/v1/users`)).json();
    if (users.find((u) => u.email === email)?.role === 'viewer') break;
    assert.ok(i < 100, 'the role change is stored');
    await admin.waitForTimeout(100);
  }
  await lin.goto(`${server.url}/networks`);
  await lin.waitForSelector('h1:text("Networks")');
  assert.equal(await lin.locator('#new-network').count(), 0, 'viewers are not offered New network');
  await lin.goto(`${server.url}/networks/new`);
  await lin.waitForSelector('#viewer-cannot-create');
  await lin.goto(`${server.url}/account`);
  assert.equal(await lin.textContent('#my-role'), 'viewer');
  await lin.screenshot({ path: `${ARTIFACTS}/08-viewer-account.png`, fullPage: true });

  // Signed out everywhere: Lin's next page is the sign-in.
  await row.locator('.revoke-sessions').click();
  await admin.waitForSelector('text=Signed out everywhere');
  await lin.goto(`${server.url}/networks`);
  assert.equal(new URL(lin.url()).pathname, '/sign-in');

  // Removed: the row goes, and her password no longer signs in.
  const linAgain = await signIn(linContext, email, second);
  await admin.locator(`#users-table tr[data-email="${email}"] .remove-user`).click();
  await admin.locator(`#users-table tr[data-email="${email}"]`).waitFor({ state: 'detached' });
  await linAgain.goto(`${server.url}/networks`);
  assert.equal(new URL(linAgain.url()).pathname, '/sign-in');
  const refused = await linContext.request.post(`${server.url}/api/v1/session`, {
    headers: { Origin: server.url },
    data: { email, password: second },
  });
  assert.equal(refused.status(), 401);
  await admin.screenshot({ path: `${ARTIFACTS}/09-admin-removed-user.png`, fullPage: true });
  await linContext.close();
  await adminContext.close();
});
