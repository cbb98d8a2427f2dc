// An appliance as the agent speaks to the server: it reads its bootstrap
// token from its launch template's user data (in moto), registers, and
// reports status. For browser tests of what the console shows about them.

/** The member-A bootstrap token and instance of a site, from moto. */
export async function memberA(customer, region, siteId) {
  const lts = await customer.ec2(region, { Action: 'DescribeLaunchTemplates' });
  const field = (xml, name) => xml.match(new RegExp(`<${name}>([^<]*)</${name}>`))?.[1] ?? '';
  const templates = lts.split('<item>').slice(1).map((item) => [field(item, 'launchTemplateId'), field(item, 'launchTemplateName')]);
  for (const [id, name] of templates) {
    if (!name.startsWith('vpcmesh-') || !name.endsWith('-a')) continue;
    const versions = await customer.ec2(region, {
      Action: 'DescribeLaunchTemplateVersions', LaunchTemplateId: id, 'LaunchTemplateVersion.1': '$Latest',
    });
    const userData = Buffer.from(versions.match(/<userData>([^<]*)<\/userData>/)[1], 'base64').toString();
    if (!userData.includes(siteId)) continue;
    const token = userData.match(/"bootstrap_token": "([^"]+)"/)[1];
    const instances = await customer.ec2(region, {
      Action: 'DescribeInstances',
      'Filter.1.Name': 'tag:vpcmesh:site', 'Filter.1.Value.1': siteId,
      'Filter.2.Name': 'tag:vpcmesh:member', 'Filter.2.Value.1': 'a',
    });
    const instanceId = instances.match(/<instanceId>([^<]*)<\/instanceId>/)[1];
    const az = instances.match(/<availabilityZone>([^<]*)<\/availabilityZone>/)[1];
    return { token, instanceId, az };
  }
  throw new Error(`no member-A launch template for site ${siteId} in ${region}`);
}

async function call(server, path, body, credential) {
  const headers = { 'content-type': 'application/json' };
  if (credential) headers.authorization = `Bearer ${credential}`;
  const res = await fetch(`${server.url}/api/appliance/v1${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}

/** Registers member A of a site and reports its tunnels to `peers` as up. */
export async function reportUp(server, customer, site, peers, privateIp) {
  const { token, instanceId, az } = await memberA(customer, site.region, site.id);
  const reg = await call(server, '/register', {
    bootstrap_token: token, instance_id: instanceId, availability_zone: az,
    private_ip: privateIp, agent_version: 'e2e',
  });
  await call(server, '/status', {
    agent_version: 'e2e', applied_version: 1, ha_role: 'active',
    tunnels: peers.map((p, i) => ({
      peer_site: p.id, state: 'up', out_bytes: 8400 + i, out_packets: 100 + i, in_bytes: 8400, in_packets: 100, in_errors: 0,
    })),
  }, reg.credential);
  return instanceId;
}
