//! A network request checked field by field before any AWS call: names,
//! regions, VPC ids, site roles, options and the KMS key.

use crate::{
    aws::{AccountId, KmsKeyArn},
    topology::is_known_region,
};
use app::api::{ConsoleError, NetworkOptions, NetworkRequest, SiteRole, TopologyKind};

pub const MAX_SITES: usize = 64;
pub const MAX_INSTANCE_TYPES: usize = 4;
const NAME_MAX: usize = 64;

#[derive(Clone, Debug)]
pub struct CheckedSite {
    pub index: usize,
    pub account: AccountId,
    pub region: String,
    pub vpc_id: String,
    pub role: SiteRole,
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct CheckedRequest {
    pub name: String,
    pub topology: TopologyKind,
    pub sites: Vec<CheckedSite>,
    pub options: NetworkOptions,
    pub kms_key: KmsKeyArn,
}

fn site_field(i: usize, field: &str) -> String {
    format!("sites[{i}].{field}")
}

pub fn check(req: &NetworkRequest) -> Result<CheckedRequest, ConsoleError> {
    let name = req.name.trim();
    if name.is_empty()
        || name.chars().count() > NAME_MAX
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
    {
        return Err(ConsoleError::invalid(
            "name",
            format!("use 1-{NAME_MAX} letters, digits, spaces, '-', '_' or '.'"),
        ));
    }
    if req.sites.len() < 2 {
        return Err(ConsoleError::invalid(
            "sites",
            "a network needs at least two sites",
        ));
    }
    if req.sites.len() > MAX_SITES {
        return Err(ConsoleError::invalid(
            "sites",
            format!("a network has at most {MAX_SITES} sites"),
        ));
    }
    let mut sites = Vec::with_capacity(req.sites.len());
    for (i, s) in req.sites.iter().enumerate() {
        let account: AccountId =
            s.account_id
                .parse()
                .map_err(|e: crate::aws::IdentifierError| {
                    ConsoleError::invalid(&site_field(i, "account_id"), e.to_string())
                })?;
        let region = s.region.trim().to_string();
        if !is_known_region(&region) {
            return Err(ConsoleError::invalid(
                &site_field(i, "region"),
                format!("'{region}' is not an AWS region vpcmesh knows"),
            ));
        }
        let vpc_id = s.vpc_id.trim().to_string();
        let hex = vpc_id.strip_prefix("vpc-").unwrap_or("");
        if !(8..=17).contains(&hex.len()) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ConsoleError::invalid(
                &site_field(i, "vpc_id"),
                format!("a VPC id looks like vpc-0123456789abcdef0; got '{vpc_id}'"),
            ));
        }
        match (req.topology, s.role) {
            (TopologyKind::Transit, _) | (_, SiteRole::Edge) => {}
            (TopologyKind::MeshWithLeaves, SiteRole::Leaf) => {}
            (_, SiteRole::Hub) => {
                return Err(ConsoleError::invalid(
                    &site_field(i, "role"),
                    "only a transit network has a hub",
                ))
            }
            (_, SiteRole::Leaf) => {
                return Err(ConsoleError::invalid(
                    &site_field(i, "role"),
                    "leaf VPCs belong to mesh-with-leaves networks only",
                ))
            }
        }
        if req.topology == TopologyKind::Transit && s.role == SiteRole::Leaf {
            return Err(ConsoleError::invalid(
                &site_field(i, "role"),
                "leaf VPCs belong to mesh-with-leaves networks only",
            ));
        }
        let name = match s.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => {
                if n.chars().count() > NAME_MAX || n.chars().any(char::is_control) {
                    return Err(ConsoleError::invalid(
                        &site_field(i, "name"),
                        format!("use at most {NAME_MAX} printable characters"),
                    ));
                }
                n.to_string()
            }
            _ => format!("{region}/{vpc_id}"),
        };
        sites.push(CheckedSite {
            index: i,
            account,
            region,
            vpc_id,
            role: s.role,
            name,
        });
    }
    let hubs = sites.iter().filter(|s| s.role == SiteRole::Hub).count();
    if req.topology == TopologyKind::Transit && hubs != 1 {
        return Err(ConsoleError::invalid(
            "sites",
            if hubs == 0 {
                "a transit network needs a hub: mark one site as hub"
            } else {
                "a transit network has exactly one hub"
            },
        ));
    }
    let options = check_options(&req.options)?;
    let kms_key: KmsKeyArn = options
        .kms_key_arn
        .parse()
        .map_err(|e: String| ConsoleError::invalid("options.kms_key_arn", e))?;
    if !is_known_region(&kms_key.region) {
        return Err(ConsoleError::invalid(
            "options.kms_key_arn",
            format!("'{}' is not an AWS region vpcmesh knows", kms_key.region),
        ));
    }
    Ok(CheckedRequest {
        name: name.to_string(),
        topology: req.topology,
        sites,
        options,
        kms_key,
    })
}

fn check_options(o: &NetworkOptions) -> Result<NetworkOptions, ConsoleError> {
    let field = "options.instance_types";
    if o.instance_types.is_empty() || o.instance_types.len() > MAX_INSTANCE_TYPES {
        return Err(ConsoleError::invalid(
            field,
            format!("choose 1-{MAX_INSTANCE_TYPES} instance types"),
        ));
    }
    let mut types: Vec<String> = Vec::new();
    for t in &o.instance_types {
        let t = t.trim().to_ascii_lowercase();
        let valid = t.split_once('.').is_some_and(|(family, size)| {
            !family.is_empty()
                && !size.is_empty()
                && t.len() <= 32
                && family
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && size.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if !valid {
            return Err(ConsoleError::invalid(
                field,
                format!("'{t}' is not an EC2 instance type like c6in.large"),
            ));
        }
        if types.contains(&t) {
            return Err(ConsoleError::invalid(
                field,
                format!("'{t}' is listed twice"),
            ));
        }
        types.push(t);
    }
    if !o.spot && types.len() > 1 {
        return Err(ConsoleError::invalid(
            field,
            "several instance types make a spot pool: turn spot on, or choose one type",
        ));
    }
    Ok(NetworkOptions {
        instance_types: types,
        kms_key_arn: o.kms_key_arn.trim().to_string(),
        ..o.clone()
    })
}
