// Accounts in a real browser against the real server, Postgres and moto:
// the role template's parameters, a refused role shown inline, a verified add.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withStack } from '../lib/stack.mjs';
import { randomAccount } from '../lib/moto.mjs';
import { watchErrors, signIn, hydrated, ARTIFACTS } from '../lib/browser.mjs';

const stack = withStack();

test('an admin adds and verifies an AWS account; mistakes are explained next to the form', async () => {
  const page = await stack.browser.newPage();
  const errors = watchErrors(page);
  await signIn(page, stack.server);
  await page.click('nav >> text=Accounts');
  await page.waitForSelector('h2:text("No AWS accounts yet")');
  await hydrated(page);

  // Step 1: what the customer needs to create the role.
  const externalId = (await page.textContent('#external-id')).trim();
  assert.match(externalId, /^vpcmesh-[A-Za-z0-9]{32}$/);
  assert.equal((await page.textContent('#trusted-account')).trim(), '123456789012');
  const template = await page.evaluate(async () => (await fetch('/api/v1/accounts/role-template.yaml')).text());
  assert.match(template, new RegExp(`Default: "${externalId}"`));
  await page.screenshot({ path: `${ARTIFACTS}/10-accounts-empty.png`, fullPage: true });

  // A role ARN of another account is refused inline and adds nothing.
  const account = randomAccount();
  await page.fill('#account-id', account);
  await page.fill('#role-arn', 'arn:aws:iam::111111111111:role/vpcmesh-access');
  await page.click('#add-account-form button[type=submit]');
  await page.waitForSelector('#add-account-result.field-error');
  assert.match(await page.textContent('#add-account-result'), /belongs to account 111111111111/);

  // The right one is assumed through moto and listed as verified.
  await page.fill('#role-arn', `arn:aws:iam::${account}:role/vpcmesh-access`);
  await page.fill('#account-label', 'Production');
  await page.click('#add-account-form button[type=submit]');
  await page.waitForSelector(`#accounts-table tr[data-account="${account}"]`);
  assert.match(await page.textContent('#add-account-result'), /Verified/);
  const row = page.locator(`#accounts-table tr[data-account="${account}"]`);
  assert.match(await row.textContent(), /Production/);
  assert.match(await row.textContent(), /Verified/);

  // Verify again from the list.
  await row.locator('button:text("Verify")').click();
  await page.waitForTimeout(300);
  assert.equal(await page.locator('#verify-error').count(), 0);
  await page.screenshot({ path: `${ARTIFACTS}/11-accounts-verified.png`, fullPage: true });
  // The refused role is a 400 the browser logs; nothing else may fail.
  assert.deepEqual(errors.filter((e) => !e.includes('status of 400')), [], 'no script errors or CSP violations');
});
