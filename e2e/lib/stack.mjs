// The whole product for a browser test: moto as AWS, the server with its own
// Postgres pointed at it, and Chromium. Registers before/after hooks.
import { before, after } from 'node:test';
import { startServer } from './server.mjs';
import { startMoto } from './moto.mjs';
import { launch } from './browser.mjs';

/** Returns an object whose moto, server and browser are set once `before` ran. */
export function withStack() {
  const stack = {};
  before(async () => {
    stack.moto = await startMoto();
    stack.server = await startServer({ aws: stack.moto.url });
    stack.browser = await launch();
  });
  after(async () => {
    await stack.browser?.close();
    await stack.server?.stop();
    await stack.moto?.stop();
  });
  return stack;
}
