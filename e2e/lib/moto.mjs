// A real moto server (local AWS) for browser tests, from the venv setup.sh made.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { freePort } from './server.mjs';

export async function startMoto() {
  const bin = process.env.VPCMESH_MOTO_SERVER;
  if (!bin) throw new Error('VPCMESH_MOTO_SERVER must be set: run ./test.sh');
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(bin, ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`moto exited early:\n${output}`);
    if (await fetch(`${url}/moto-api/`).then((r) => r.ok, () => false)) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    },
  };
}

/** A random 12-digit customer account: moto keeps each account's resources apart. */
export function randomAccount() {
  return String(100000000000 + Math.floor(Math.random() * 899999999999));
}
