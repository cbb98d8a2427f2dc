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

// The customer's side, driven straight against moto's APIs (as the customer
// would in their own console): moto checks no signatures, and it tells
// accounts apart by the access key an assumed role hands out.
const auth = (key, region, service) =>
  `AWS4-HMAC-SHA256 Credential=${key}/20260101/${region}/${service}/aws4_request, SignedHeaders=host, Signature=0`;

async function query(moto, key, region, service, params) {
  const res = await fetch(`${moto.url}/`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: auth(key, region, service) },
    body: new URLSearchParams(params).toString(),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${service} ${params.Action}: ${res.status} ${text}`);
  return text;
}

const tag = (xml, name) => xml.match(new RegExp(`<${name}>([^<]*)</${name}>`))?.[1];

export class Customer {
  constructor(moto, account) {
    this.moto = moto;
    this.account = account;
    this.roleArn = `arn:aws:iam::${account}:role/vpcmesh-access`;
  }

  static async create(moto) {
    const c = new Customer(moto, randomAccount());
    const out = await query(moto, 'AKIAIOSFODNN7EXAMPLE', 'us-east-1', 'sts', {
      Action: 'AssumeRole', Version: '2011-06-15', RoleArn: c.roleArn, RoleSessionName: 'e2e-setup',
    });
    c.key = tag(out, 'AccessKeyId');
    return c;
  }

  ec2(region, params) {
    return query(this.moto, this.key, region, 'ec2', { Version: '2016-11-15', ...params });
  }

  /** A VPC with subnets in two AZs and a route table; returns its id. */
  async vpc(region, cidr, name) {
    const vpcId = tag(await this.ec2(region, { Action: 'CreateVpc', CidrBlock: cidr }), 'vpcId');
    if (name) await this.ec2(region, { Action: 'CreateTags', 'ResourceId.1': vpcId, 'Tag.1.Key': 'Name', 'Tag.1.Value': name });
    const zones = [...(await this.ec2(region, { Action: 'DescribeAvailabilityZones' })).matchAll(/<zoneName>([^<]*)<\/zoneName>/g)].map((m) => m[1]);
    const rt = tag(await this.ec2(region, { Action: 'CreateRouteTable', VpcId: vpcId }), 'routeTableId');
    // Quarter-size subnets at the start of the block, one per AZ.
    const [addr, len] = cidr.split('/');
    const base = addr.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
    const step = 2 ** (32 - (Number(len) + 2));
    const ip = (n) => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
    for (const [i, zone] of zones.slice(0, 2).entries()) {
      const subnet = tag(await this.ec2(region, {
        Action: 'CreateSubnet', VpcId: vpcId, AvailabilityZone: zone, CidrBlock: `${ip(base + i * step)}/${Number(len) + 2}`,
      }), 'subnetId');
      await this.ec2(region, { Action: 'AssociateRouteTable', RouteTableId: rt, SubnetId: subnet });
    }
    return vpcId;
  }

  /** A KMS key in `region`, named by `alias` when given; returns its ARN. */
  async kmsKey(region, alias) {
    const { KeyMetadata: key } = await this.kms(region, 'CreateKey', { Description: 'e2e network key' });
    if (alias) await this.kms(region, 'CreateAlias', { AliasName: alias, TargetKeyId: key.KeyId });
    return key.Arn;
  }

  async kms(region, action, body) {
    const res = await fetch(`${this.moto.url}/`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-amz-json-1.1',
        'x-amz-target': `TrentService.${action}`,
        authorization: auth(this.key, region, 'kms'),
      },
      body: JSON.stringify(body),
    });
    if (!res.ok) throw new Error(`kms ${action}: ${res.status} ${await res.text()}`);
    const text = await res.text();
    return text ? JSON.parse(text) : {};
  }
}
