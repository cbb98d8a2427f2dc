// Debian's Chromium, headless, with the flags this closed network needs.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ARTIFACTS = fileURLToPath(new URL('../artifacts/', import.meta.url));
mkdirSync(ARTIFACTS, { recursive: true });

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** Collects page errors and console errors (CSP violations land there). */
export function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return errors;
}

/**
 * Clicks `selector` until `done()` holds: before hydration a click does
 * nothing, so success proves the WebAssembly bundle took over the page.
 */
export async function clickUntil(page, selector, done, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    await page.click(selector);
    for (let i = 0; i < 5; i++) {
      if (await done()) return;
      await page.waitForTimeout(100);
    }
  }
  throw new Error(`clicking ${selector} had no effect within ${timeoutMs}ms: the page did not hydrate`);
}

/** Signs in through the page as the server's demo admin; waits for the dashboard. */
export async function signIn(page, server) {
  await page.goto(`${server.url}/sign-in`);
  await page.fill('#email', server.email);
  await page.fill('#password', server.password);
  await Promise.all([page.waitForURL(`${server.url}/`), page.click('button[type=submit]')]);
  await page.waitForSelector('h1:text("Dashboard")');
}

/** Waits until the WebAssembly bundle has taken over the page. */
export async function hydrated(page) {
  await page.waitForSelector('html[data-hydrated="true"]', { state: 'attached', timeout: 30_000 });
}
