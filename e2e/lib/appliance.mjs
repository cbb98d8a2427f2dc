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
    // The server checks the claimed address with EC2: use the instance's own.
    const privateIp = instances.match(/<privateIpAddress>([^<]*)<\/privateIpAddress>/)[1];
    return { token, instanceId, az, privateIp };
  }
  throw new Error(`no member-A launch template for site ${siteId} in ${region} among ${JSON.stringify(templates)}`);
}

async function call(server, path, body, credential) {
  const headers = { 'content-type': 'application/json' };
  if (credential) headers.authorization = `Bearer ${credential}`;
  const res = await fetch(`${server.url}/api/appliance/v1${path}`, {
    method: body === undefined ? 'GET' : 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.status === 204 ? null : res.json();
}

/**
 * Member A of a site, registered the way the agent registers. `follow()`
 * does what the agent does after a config change: fetch the config, "apply"
 * it, and report the epochs it accepts, the epoch each tunnel sends with,
 * and the tunnels as rekeying while two epochs are in play, else up.
 */
export async function registerAgent(server, customer, site) {
  const { token, instanceId, az, privateIp } = await memberA(customer, site.region, site.id);
  const reg = await call(server, '/register', {
    bootstrap_token: token, instance_id: instanceId, availability_zone: az,
    private_ip: privateIp, agent_version: 'e2e',
  });
  let packets = 100;
  const follow = async () => {
    // Today's agent protocol (keys per tunnel).
    const config = await call(server, '/config?protocol=4', undefined, reg.credential);
    const epochs = config.keys.map((k) => k.epoch).sort((a, b) => b - a);
    packets += 1;
    await call(server, '/status', {
      agent_version: 'e2e', applied_version: config.version, ha_role: 'active', epochs,
      tunnels: config.tunnels.map((t) => ({
        peer_site: t.peer_site, state: epochs.length > 1 ? 'rekeying' : 'up', out_epoch: t.out.epoch,
        out_bytes: 84 * packets, out_packets: packets, in_bytes: 84 * packets, in_packets: packets, in_errors: 0,
      })),
    }, reg.credential);
    return config;
  };
  await follow();
  return { instanceId, follow };
}
