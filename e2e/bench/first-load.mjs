// One first-load measurement in a fresh headless Chromium (cold cache), run
// inside the client namespace of ./first-load.sh:
//   node first-load.mjs URL EMAIL PASSWORD [RTT_MS DOWN_KBIT UP_KBIT]
// With a profile, Chromium's DevTools network emulation (what Lighthouse's
// "devtools" throttling uses) adds the round trip to every request and
// limits throughput.
// Prints one JSON line: the sign-in page cold (time to first byte, DOM
// ready, load, hydrated, bytes over the wire), then the networks page after
// signing in (bundle cached: what every later page costs). Times are from
// the start of the navigation. (The emulated round trip is not visible in
// the first byte's timing, only from the DOM on.)
import { launch } from '../lib/browser.mjs';

const [url, email, password, rtt, down, up] = process.argv.slice(2);
const browser = await launch();

async function measure(page, path) {
  await page.goto(`${url}${path}`, { waitUntil: 'load' });
  await page.waitForFunction(() => document.documentElement.dataset.hydrated === 'true', null, { polling: 'raf', timeout: 120_000 });
  return page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const resources = performance.getEntriesByType('resource');
    const bytes = nav.transferSize + resources.reduce((n, r) => n + r.transferSize, 0);
    return {
      ttfb: Math.round(nav.responseStart),
      dom: Math.round(nav.domContentLoadedEventEnd),
      load: Math.round(nav.loadEventEnd),
      hydrated: Math.round(performance.now()),
      bytes,
      requests: resources.length + 1,
    };
  });
}

try {
  const context = await browser.newContext();
  const page = await context.newPage();
  if (rtt) {
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: Number(rtt),
      downloadThroughput: (Number(down) * 1000) / 8,
      uploadThroughput: (Number(up) * 1000) / 8,
    });
  }
  const cold = await measure(page, '/sign-in');
  await page.fill('#email', email);
  await page.fill('#password', password);
  await Promise.all([page.waitForURL(`${url}/`), page.click('button[type=submit]')]);
  const warm = await measure(page, '/networks');
  console.log(JSON.stringify({ cold, warm }));
} finally {
  await browser.close();
}
