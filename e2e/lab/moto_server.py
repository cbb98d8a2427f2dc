"""moto's server as the lab and the tests run it, with two additions:

1. Elastic IPs come from 198.18.0.0/15 (RFC 2544's benchmarking range), one
   after another, instead of random addresses in 127/8. Loopback addresses
   cannot cross a wire, so the lab could not route them to the instances they
   belong to; the benchmarking range is reserved for this kind of network.
2. CloudFormation creates the Transit Gateway resources a mesh with leaves
   uses (attachment, route table, association, propagation, route). moto's
   EC2 backend has them all, but its CloudFormation knows only
   AWS::EC2::TransitGateway and silently skips the others, so the leaves of
   a stack were never attached. Each resource below calls the EC2 backend the
   way the EC2 API would.

Everything else is moto as released. Arguments are moto_server's."""

import ipaddress
import itertools
import sys

import moto.ec2.models.elastic_ip_addresses as elastic_ips
from moto.core.common_models import CloudFormationModel
from moto.ec2.models.transit_gateway_route_tables import TransitGatewayRouteTableBackend
from moto.server import main

_FIRST = int(ipaddress.IPv4Address("198.18.0.0"))
_next = itertools.count(1)


def lab_public_ip() -> str:
    while True:
        n = next(_next)
        if n >= 2**17:
            raise RuntimeError("the lab's Elastic IP range 198.18.0.0/15 is exhausted")
        if n % 256 not in (0, 255):
            return str(ipaddress.IPv4Address(_FIRST + n))


elastic_ips.random_ip = lab_public_ip

# moto keeps a static route's attachment as one object where the API has a
# list, so DescribeTransitGatewayRoutes answered "no attachment".
_create_route = TransitGatewayRouteTableBackend.create_transit_gateway_route


def _create_route_listing_its_attachment(self, *args, **kwargs):
    route = _create_route(self, *args, **kwargs)
    attachment = route.get("transitGatewayAttachments")
    if isinstance(attachment, dict):
        route["transitGatewayAttachments"] = [attachment]
    return route


TransitGatewayRouteTableBackend.create_transit_gateway_route = _create_route_listing_its_attachment


def _backend(account_id, region_name):
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region_name]


class _Created:
    """What a Ref to one of these resources resolves to: its id."""

    def __init__(self, physical_id, delete):
        self.physical_resource_id = physical_id
        self._delete = delete

    def delete(self, account_id, region_name):
        self._delete(_backend(account_id, region_name))

    def is_created(self):
        return True


def _model(cfn_type, create):
    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json.get("Properties", {})
        return create(_backend(account_id, region_name), props)

    def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
        pass

    return type(
        cfn_type.replace(":", ""),
        (CloudFormationModel,),
        {
            "cloudformation_type": staticmethod(lambda: cfn_type),
            "cloudformation_name_type": staticmethod(lambda: ""),
            "create_from_cloudformation_json": classmethod(create_from_cloudformation_json),
            "delete_from_cloudformation_json": classmethod(delete_from_cloudformation_json),
            "is_created": lambda self: True,
        },
    )


def _tags(props):
    return {t["Key"]: t["Value"] for t in props.get("Tags", [])}


def _attachment(ec2, p):
    a = ec2.create_transit_gateway_vpc_attachment(
        transit_gateway_id=p["TransitGatewayId"], vpc_id=p["VpcId"], subnet_ids=p.get("SubnetIds", []), tags=_tags(p)
    )
    return _Created(a.id, lambda ec2: ec2.delete_transit_gateway_vpc_attachment(a.id))


def _route_table(ec2, p):
    t = ec2.create_transit_gateway_route_table(transit_gateway_id=p["TransitGatewayId"], tags=_tags(p))
    return _Created(t.id, lambda ec2: ec2.delete_transit_gateway_route_table(t.id))


def _association(ec2, p):
    att, table = p["TransitGatewayAttachmentId"], p["TransitGatewayRouteTableId"]
    ec2.associate_transit_gateway_route_table(transit_gateway_attachment_id=att, transit_gateway_route_table_id=table)
    return _Created(
        f"{table}|{att}",
        lambda ec2: ec2.disassociate_transit_gateway_route_table(
            transit_gateway_attachment_id=att, transit_gateway_route_table_id=table
        ),
    )


def _propagation(ec2, p):
    att, table = p["TransitGatewayAttachmentId"], p["TransitGatewayRouteTableId"]
    ec2.enable_transit_gateway_route_table_propagation(
        transit_gateway_attachment_id=att, transit_gateway_route_table_id=table
    )
    return _Created(
        f"{table}|{att}",
        lambda ec2: ec2.disable_transit_gateway_route_table_propagation(
            transit_gateway_attachment_id=att, transit_gateway_route_table_id=table
        ),
    )


def _route(ec2, p):
    table, cidr = p["TransitGatewayRouteTableId"], p["DestinationCidrBlock"]
    ec2.create_transit_gateway_route(
        transit_gateway_route_table_id=table,
        destination_cidr_block=cidr,
        transit_gateway_attachment_id=p.get("TransitGatewayAttachmentId"),
        blackhole=str(p.get("Blackhole", "false")).lower() == "true",
    )
    return _Created(f"{table}|{cidr}", lambda ec2: ec2.delete_transit_gateway_route(table, cidr))


for _type, _create in [
    ("AWS::EC2::TransitGatewayAttachment", _attachment),
    ("AWS::EC2::TransitGatewayVpcAttachment", _attachment),
    ("AWS::EC2::TransitGatewayRouteTable", _route_table),
    ("AWS::EC2::TransitGatewayRouteTableAssociation", _association),
    ("AWS::EC2::TransitGatewayRouteTablePropagation", _propagation),
    ("AWS::EC2::TransitGatewayRoute", _route),
]:
    _model(_type, _create)

if __name__ == "__main__":
    sys.exit(main())
