// Starts the real vpcmesh server for a browser test: its own private Postgres
// cluster in a temporary folder, a demo admin, a free loopback port.
import { spawn } from 'node:child_process';
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { once } from 'node:events';

export const freePort = () =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

export const ADMIN_EMAIL = 'e2e-admin@demo.vpcmesh.dev';

/** `aws`: an AWS endpoint (moto) the server calls instead of real AWS. */
export async function startServer({ aws } = {}) {
  const bin = process.env.VPCMESH_SERVER_BIN;
  const siteRoot = process.env.VPCMESH_SITE_ROOT;
  if (!bin || !siteRoot) {
    throw new Error('VPCMESH_SERVER_BIN and VPCMESH_SITE_ROOT must be set: run ./test.sh');
  }
  // Under /tmp and traversable: as root the cluster runs as the postgres user.
  const dir = mkdtempSync('/tmp/vpcmesh-e2e-');
  chmodSync(dir, 0o755);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    bin,
    ['--embedded-postgres', `${dir}/pg`, '--listen', `127.0.0.1:${port}`, '--site-root', siteRoot,
     '--demo-admin', ADMIN_EMAIL, ...(aws ? ['--aws-endpoint-url', aws] : []),
     // Rotations finish in seconds here, not the production half minute.
     '--rotation-grace-secs', '2'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } },
  );
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));

  const deadline = Date.now() + 90_000;
  let password;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`server exited early:\n${output}`);
    password ??= output.match(/with password (\S+)/)?.[1];
    if (password) {
      const ready = await fetch(`${url}/readyz`).then((r) => r.ok, () => false);
      if (ready) break;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  if (!password) throw new Error(`server did not start within 90s:\n${output}`);

  return {
    url,
    email: ADMIN_EMAIL,
    password,
    output: () => output,
    /** Stops the server with SIGTERM (graceful shutdown); resolves to its exit code. */
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
      rmSync(dir, { recursive: true, force: true });
      return child.exitCode;
    },
  };
}
