//! What the lab mirrors, as the AWS emulator holds it: a plain snapshot of
//! the instances, VPCs, route tables, Elastic IPs and Transit Gateways of
//! the watched accounts and regions, read with the EC2 API.

use aws_sdk_ec2::types::Filter;
use base64::Engine;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub instances: Vec<Instance>,
    pub vpcs: Vec<Vpc>,
    pub route_tables: Vec<RouteTable>,
    pub addresses: Vec<Address>,
    pub gateways: Vec<TransitGateway>,
}

/// A running vpcmesh instance (one launched by an appliance stack).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub region: String,
    pub vpc_id: String,
    pub subnet_id: String,
    pub availability_zone: String,
    pub private_ip: Ipv4Addr,
    pub mac: String,
    pub interface_id: String,
    /// Where its user data comes from: (launch template id, version).
    pub launch_template: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vpc {
    pub id: String,
    pub region: String,
    /// The primary CIDR first.
    pub cidrs: Vec<Ipv4Net>,
    pub subnets: Vec<Subnet>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub cidr: Ipv4Net,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTable {
    pub id: String,
    pub vpc_id: String,
    pub main: bool,
    pub subnets: Vec<String>,
    pub routes: Vec<(Ipv4Net, Target)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Local,
    InternetGateway,
    Instance(String),
    Interface(String),
    TransitGateway(String),
    /// A target the lab does not model (NAT gateway, peering, ...): a blackhole.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    pub public_ip: Ipv4Addr,
    pub instance_id: Option<String>,
    /// Associated by interface (as the agent does), moto names no instance.
    pub interface_id: Option<String>,
    pub private_ip: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitGateway {
    pub id: String,
    pub region: String,
    pub attachments: Vec<GatewayAttachment>,
    pub tables: Vec<GatewayTable>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAttachment {
    pub id: String,
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    /// The route table traffic from this attachment is looked up in.
    pub table: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayTable {
    pub id: String,
    /// Static and propagated routes: destination -> attachment.
    pub routes: Vec<(Ipv4Net, String)>,
}

/// One watched account in one region.
#[derive(Clone)]
pub struct Scope {
    pub region: String,
    pub ec2: aws_sdk_ec2::Client,
    /// The account's SDK configuration (its credentials).
    pub sdk: aws_config::SdkConfig,
}

#[derive(Debug, thiserror::Error)]
#[error("{call} in {region}: {message}")]
pub struct CloudError {
    pub call: &'static str,
    pub region: String,
    pub message: String,
}

fn err<'a, E: std::fmt::Debug>(
    call: &'static str,
    region: &'a str,
) -> impl FnOnce(E) -> CloudError + 'a {
    move |e| CloudError {
        call,
        region: region.to_string(),
        message: format!("{e:?}").chars().take(300).collect(),
    }
}

fn net(cidr: Option<&str>) -> Option<Ipv4Net> {
    cidr.and_then(|c| c.parse().ok())
}

impl Scope {
    /// Everything of this account and region, or the first call that failed.
    pub async fn read(&self) -> Result<Snapshot, CloudError> {
        let r = self.region.as_str();
        let (instances, vpcs, tables, addresses) = tokio::try_join!(
            self.instances(),
            self.vpcs(),
            self.route_tables(),
            self.addresses()
        )?;
        let gateways = self.transit_gateways().await?;
        let _ = r;
        Ok(Snapshot {
            instances,
            vpcs,
            route_tables: tables,
            addresses,
            gateways,
        })
    }

    async fn instances(&self) -> Result<Vec<Instance>, CloudError> {
        let out = self
            .ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .values("running")
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("tag-key")
                    .values("vpcmesh:site")
                    .build(),
            )
            .send()
            .await
            .map_err(err("ec2:DescribeInstances", &self.region))?;
        let mut found = Vec::new();
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .map(str::to_string)
            };
            let eni = i.network_interfaces().first();
            let (Some(id), Some(vpc_id), Some(subnet_id), Some(ip)) = (
                i.instance_id(),
                i.vpc_id(),
                i.subnet_id(),
                i.private_ip_address().and_then(|a| a.parse().ok()),
            ) else {
                continue;
            };
            found.push(Instance {
                id: id.to_string(),
                region: self.region.clone(),
                vpc_id: vpc_id.to_string(),
                subnet_id: subnet_id.to_string(),
                availability_zone: i
                    .placement()
                    .and_then(|p| p.availability_zone())
                    .unwrap_or_default()
                    .to_string(),
                private_ip: ip,
                mac: eni
                    .and_then(|e| e.mac_address())
                    .unwrap_or_default()
                    .to_string(),
                interface_id: eni
                    .and_then(|e| e.network_interface_id())
                    .unwrap_or_default()
                    .to_string(),
                launch_template: tag("aws:ec2launchtemplate:id")
                    .zip(tag("aws:ec2launchtemplate:version")),
            });
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn vpcs(&self) -> Result<Vec<Vpc>, CloudError> {
        let (vpcs, subnets) = tokio::try_join!(
            async {
                self.ec2
                    .describe_vpcs()
                    .send()
                    .await
                    .map_err(err("ec2:DescribeVpcs", &self.region))
            },
            async {
                self.ec2
                    .describe_subnets()
                    .send()
                    .await
                    .map_err(err("ec2:DescribeSubnets", &self.region))
            }
        )?;
        let mut by_vpc: BTreeMap<String, Vec<Subnet>> = BTreeMap::new();
        for s in subnets.subnets() {
            if let (Some(id), Some(vpc), Some(cidr)) =
                (s.subnet_id(), s.vpc_id(), net(s.cidr_block()))
            {
                by_vpc.entry(vpc.to_string()).or_default().push(Subnet {
                    id: id.to_string(),
                    cidr,
                });
            }
        }
        let mut found = Vec::new();
        for v in vpcs.vpcs() {
            let Some(id) = v.vpc_id() else { continue };
            // moto's default VPC in every region is nobody's network.
            if v.is_default() == Some(true) {
                continue;
            }
            let mut cidrs: Vec<Ipv4Net> = net(v.cidr_block()).into_iter().collect();
            for a in v.cidr_block_association_set() {
                let live = a
                    .cidr_block_state()
                    .and_then(|s| s.state())
                    .is_none_or(|s| s.as_str() == "associated");
                if let Some(c) = net(a.cidr_block()).filter(|c| live && !cidrs.contains(c)) {
                    cidrs.push(c);
                }
            }
            let mut subnets = by_vpc.remove(id).unwrap_or_default();
            subnets.sort_by_key(|s| s.cidr);
            found.push(Vpc {
                id: id.to_string(),
                region: self.region.clone(),
                cidrs,
                subnets,
            });
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn route_tables(&self) -> Result<Vec<RouteTable>, CloudError> {
        let out = self
            .ec2
            .describe_route_tables()
            .send()
            .await
            .map_err(err("ec2:DescribeRouteTables", &self.region))?;
        let mut found = Vec::new();
        for t in out.route_tables() {
            let (Some(id), Some(vpc_id)) = (t.route_table_id(), t.vpc_id()) else {
                continue;
            };
            let routes = t
                .routes()
                .iter()
                .filter_map(|r| {
                    let dest = net(r.destination_cidr_block())?;
                    let target = if let Some(i) = r.instance_id() {
                        Target::Instance(i.to_string())
                    } else if let Some(e) = r.network_interface_id() {
                        Target::Interface(e.to_string())
                    } else if let Some(t) = r.transit_gateway_id() {
                        Target::TransitGateway(t.to_string())
                    } else {
                        match r.gateway_id() {
                            Some("local") => Target::Local,
                            Some(g) if g.starts_with("igw-") => Target::InternetGateway,
                            Some(g) => Target::Other(g.to_string()),
                            None => Target::Other("unknown".into()),
                        }
                    };
                    Some((dest, target))
                })
                .collect();
            found.push(RouteTable {
                id: id.to_string(),
                vpc_id: vpc_id.to_string(),
                main: t.associations().iter().any(|a| a.main() == Some(true)),
                subnets: t
                    .associations()
                    .iter()
                    .filter_map(|a| a.subnet_id().map(str::to_string))
                    .collect(),
                routes,
            });
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn addresses(&self) -> Result<Vec<Address>, CloudError> {
        let out = self
            .ec2
            .describe_addresses()
            .send()
            .await
            .map_err(err("ec2:DescribeAddresses", &self.region))?;
        let mut found: Vec<Address> = out
            .addresses()
            .iter()
            .filter_map(|a| {
                Some(Address {
                    public_ip: a.public_ip()?.parse().ok()?,
                    instance_id: a.instance_id().map(str::to_string),
                    interface_id: a.network_interface_id().map(str::to_string),
                    private_ip: a.private_ip_address().and_then(|p| p.parse().ok()),
                })
            })
            .collect();
        found.sort_by_key(|a| a.public_ip);
        Ok(found)
    }

    async fn transit_gateways(&self) -> Result<Vec<TransitGateway>, CloudError> {
        let r = &self.region;
        let gateways = self
            .ec2
            .describe_transit_gateways()
            .send()
            .await
            .map_err(err("ec2:DescribeTransitGateways", r))?;
        let live: Vec<String> = gateways
            .transit_gateways()
            .iter()
            .filter(|g| {
                g.state()
                    .is_none_or(|s| !matches!(s.as_str(), "deleted" | "deleting"))
            })
            .filter_map(|g| g.transit_gateway_id().map(str::to_string))
            .collect();
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let attachments = self
            .ec2
            .describe_transit_gateway_vpc_attachments()
            .send()
            .await
            .map_err(err("ec2:DescribeTransitGatewayVpcAttachments", r))?;
        let tables = self
            .ec2
            .describe_transit_gateway_route_tables()
            .send()
            .await
            .map_err(err("ec2:DescribeTransitGatewayRouteTables", r))?;
        let mut found = Vec::new();
        for gw in live {
            let mut atts: Vec<GatewayAttachment> = attachments
                .transit_gateway_vpc_attachments()
                .iter()
                .filter(|a| a.transit_gateway_id() == Some(gw.as_str()))
                .filter(|a| {
                    a.state()
                        .is_none_or(|s| !matches!(s.as_str(), "deleted" | "deleting"))
                })
                .filter_map(|a| {
                    Some(GatewayAttachment {
                        id: a.transit_gateway_attachment_id()?.to_string(),
                        vpc_id: a.vpc_id()?.to_string(),
                        subnet_ids: a.subnet_ids().to_vec(),
                        table: None,
                    })
                })
                .collect();
            let mut gw_tables = Vec::new();
            for t in tables
                .transit_gateway_route_tables()
                .iter()
                .filter(|t| t.transit_gateway_id() == Some(gw.as_str()))
            {
                let Some(tid) = t.transit_gateway_route_table_id() else {
                    continue;
                };
                let (routes, associations, propagations) = tokio::try_join!(
                    async {
                        self.ec2
                            .search_transit_gateway_routes()
                            .transit_gateway_route_table_id(tid)
                            .filters(Filter::builder().name("state").values("active").build())
                            .send()
                            .await
                            .map_err(err("ec2:SearchTransitGatewayRoutes", r))
                    },
                    async {
                        self.ec2
                            .get_transit_gateway_route_table_associations()
                            .transit_gateway_route_table_id(tid)
                            .send()
                            .await
                            .map_err(err("ec2:GetTransitGatewayRouteTableAssociations", r))
                    },
                    async {
                        self.ec2
                            .get_transit_gateway_route_table_propagations()
                            .transit_gateway_route_table_id(tid)
                            .send()
                            .await
                            .map_err(err("ec2:GetTransitGatewayRouteTablePropagations", r))
                    }
                )?;
                for a in associations.associations() {
                    if let Some(att) = atts
                        .iter_mut()
                        .find(|x| Some(x.id.as_str()) == a.transit_gateway_attachment_id())
                    {
                        att.table = Some(tid.to_string());
                    }
                }
                let mut table_routes: Vec<(Ipv4Net, String)> = routes
                    .routes()
                    .iter()
                    .filter_map(|route| {
                        let dest = net(route.destination_cidr_block())?;
                        let att = route
                            .transit_gateway_attachments()
                            .first()?
                            .transit_gateway_attachment_id()?;
                        Some((dest, att.to_string()))
                    })
                    .collect();
                // Propagation: an attachment's VPC CIDRs, unless a static
                // route already names the destination.
                for p in propagations.transit_gateway_route_table_propagations() {
                    let Some(att) = p.transit_gateway_attachment_id() else {
                        continue;
                    };
                    let Some(vpc) = atts.iter().find(|a| a.id == att).map(|a| a.vpc_id.clone())
                    else {
                        continue;
                    };
                    let cidrs = self.vpc_cidrs(&vpc).await?;
                    for c in cidrs {
                        if !table_routes.iter().any(|(d, _)| *d == c) {
                            table_routes.push((c, att.to_string()));
                        }
                    }
                }
                table_routes.sort();
                gw_tables.push(GatewayTable {
                    id: tid.to_string(),
                    routes: table_routes,
                });
            }
            atts.sort_by(|a, b| a.id.cmp(&b.id));
            gw_tables.sort_by(|a, b| a.id.cmp(&b.id));
            found.push(TransitGateway {
                id: gw,
                region: self.region.clone(),
                attachments: atts,
                tables: gw_tables,
            });
        }
        Ok(found)
    }

    async fn vpc_cidrs(&self, vpc: &str) -> Result<Vec<Ipv4Net>, CloudError> {
        let out = self
            .ec2
            .describe_vpcs()
            .vpc_ids(vpc)
            .send()
            .await
            .map_err(err("ec2:DescribeVpcs", &self.region))?;
        Ok(out
            .vpcs()
            .iter()
            .flat_map(|v| {
                net(v.cidr_block()).into_iter().chain(
                    v.cidr_block_association_set()
                        .iter()
                        .filter_map(|a| net(a.cidr_block())),
                )
            })
            .collect())
    }

    /// The user data an instance launched with, decoded: from its launch
    /// template version, else from the instance attribute.
    pub async fn user_data(&self, instance: &Instance) -> Result<Option<String>, CloudError> {
        let encoded = if let Some((template, version)) = &instance.launch_template {
            let out = self
                .ec2
                .describe_launch_template_versions()
                .launch_template_id(template)
                .versions(version)
                .send()
                .await
                .map_err(err("ec2:DescribeLaunchTemplateVersions", &self.region))?;
            out.launch_template_versions()
                .first()
                .and_then(|v| v.launch_template_data())
                .and_then(|d| d.user_data())
                .map(str::to_string)
        } else {
            let out = self
                .ec2
                .describe_instance_attribute()
                .instance_id(&instance.id)
                .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
                .send()
                .await
                .map_err(err("ec2:DescribeInstanceAttribute", &self.region))?;
            out.user_data().and_then(|u| u.value()).map(str::to_string)
        };
        Ok(encoded
            .and_then(|e| base64::engine::general_purpose::STANDARD.decode(e).ok())
            .and_then(|b| String::from_utf8(b).ok()))
    }
}

impl Snapshot {
    pub fn merge(&mut self, other: Snapshot) {
        self.instances.extend(other.instances);
        self.vpcs.extend(other.vpcs);
        self.route_tables.extend(other.route_tables);
        self.addresses.extend(other.addresses);
        self.gateways.extend(other.gateways);
    }
}
