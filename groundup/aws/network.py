"""Seed step 2, configure network infrastructure: VPC, DHCP options, subnet, internet gateway,
route table, security group and its rules, network load balancer, target group, listener.

Each `ensure_*` looks its resource up by the cluster's tags and creates or corrects only what
differs from the spec; every function returns plain IDs.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from groundup.aws.core import (
    CLUSTER_TAG,
    ClusterStateError,
    Context,
    cluster_tags,
    error_code,
    is_planned,
    planned,
    retry_transient,
    tag_filters,
    tag_spec,
    tags_dict,
)
from groundup.spec import ClusterSpec

API_PORT = 6443


def _one(items: list[dict], what: str, cluster: str) -> dict | None:
    if len(items) > 1:
        raise ClusterStateError(
            f"{len(items)} {what}s carry the tags of cluster {cluster!r}; expected one. "
            "Remove the extra ones (groundup teardown removes all of them)."
        )
    return items[0] if items else None


# VPC ---------------------------------------------------------------------------------------------

def find_vpc(ctx: Context) -> dict | None:
    vpcs = ctx.ec2.describe_vpcs(Filters=tag_filters(ctx.spec.name, "vpc"))["Vpcs"]
    return _one(vpcs, "vpc", ctx.spec.name)


def ensure_vpc(ctx: Context) -> str:
    """VPC with the spec's CIDR, DNS support and DNS host names on (seed step 2.2-2.5)."""
    spec = ctx.spec
    vpc = find_vpc(ctx)
    if vpc is None:
        created = ctx.act("create", "vpc", ctx.ec2.create_vpc, CidrBlock=str(spec.vpc_cidr),
                          TagSpecifications=tag_spec(spec, "vpc", "vpc"), detail=str(spec.vpc_cidr))
        if created is None:
            vpc_id = planned("vpc")
        else:
            vpc_id = created["Vpc"]["VpcId"]
            retry_transient(ctx.ec2.get_waiter("vpc_available").wait, VpcIds=[vpc_id],
                            WaiterConfig={"Delay": 2, "MaxAttempts": 60})
    else:
        vpc_id = vpc["VpcId"]
        if vpc["CidrBlock"] != str(spec.vpc_cidr):
            raise ClusterStateError(
                f"vpc_cidr: VPC {vpc_id} of cluster {spec.name!r} has {vpc['CidrBlock']}, the spec says "
                f"{spec.vpc_cidr}; tear the cluster down to change it"
            )
        ctx.note("vpc", vpc_id)
    for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
        enabled = False
        if not is_planned(vpc_id):
            reply = retry_transient(ctx.ec2.describe_vpc_attribute, VpcId=vpc_id, Attribute=attribute[0].lower() + attribute[1:])
            enabled = reply[attribute]["Value"]
        if not enabled:
            ctx.act("modify", f"vpc {attribute}", ctx.ec2.modify_vpc_attribute, VpcId=vpc_id, **{attribute: {"Value": True}})
    return vpc_id


# DHCP options -------------------------------------------------------------------------------------

def dhcp_configuration(spec: ClusterSpec) -> dict[str, list[str]]:
    return {"domain-name": [spec.internal_domain], "domain-name-servers": ["AmazonProvidedDNS"]}


def ensure_dhcp_options(ctx: Context, vpc_id: str) -> str:
    """DHCP options set (`<region>.compute.internal`, AmazonProvidedDNS) associated with the VPC (2.7-2.9)."""
    spec = ctx.spec
    found = _one(ctx.ec2.describe_dhcp_options(Filters=tag_filters(spec.name, "dhcp-options"))["DhcpOptions"],
                 "dhcp options set", spec.name)
    wanted = dhcp_configuration(spec)
    if found is not None:
        have = {c["Key"]: sorted(v["Value"] for v in c["Values"]) for c in found["DhcpConfigurations"]}
        if have != {k: sorted(v) for k, v in wanted.items()}:
            raise ClusterStateError(f"DHCP options {found['DhcpOptionsId']} differ from the spec: {have}")
        dhcp_id = found["DhcpOptionsId"]
        ctx.note("dhcp-options", dhcp_id)
    else:
        created = ctx.act(
            "create", "dhcp-options", ctx.ec2.create_dhcp_options,
            DhcpConfigurations=[{"Key": k, "Values": v} for k, v in wanted.items()],
            TagSpecifications=tag_spec(spec, "dhcp-options", "dhcp-options"), detail=spec.internal_domain,
        )
        if created is None:
            dhcp_id = planned("dhcp-options")
        else:
            dhcp_id = created["DhcpOptions"]["DhcpOptionsId"]
            if not created["DhcpOptions"].get("Tags"):
                # Some EC2 implementations (moto) ignore TagSpecifications here: tag explicitly.
                retry_transient(ctx.ec2.create_tags, Resources=[dhcp_id], Tags=cluster_tags(spec, "dhcp-options"))
    associated = None
    if not is_planned(vpc_id):
        associated = retry_transient(ctx.ec2.describe_vpcs, VpcIds=[vpc_id])["Vpcs"][0].get("DhcpOptionsId")
    if associated != dhcp_id:
        ctx.act("modify", "dhcp-options association", retry_transient, ctx.ec2.associate_dhcp_options,
                DhcpOptionsId=dhcp_id, VpcId=vpc_id)
    return dhcp_id


# Subnet -------------------------------------------------------------------------------------------

def ensure_subnet(ctx: Context, vpc_id: str) -> str:
    """The cluster's subnet (2.10)."""
    spec = ctx.spec
    found = _one(ctx.ec2.describe_subnets(Filters=tag_filters(spec.name, "subnet"))["Subnets"], "subnet", spec.name)
    if found is not None:
        if found["CidrBlock"] != str(spec.subnet_cidr):
            raise ClusterStateError(
                f"subnet_cidr: subnet {found['SubnetId']} has {found['CidrBlock']}, the spec says {spec.subnet_cidr}"
            )
        ctx.note("subnet", found["SubnetId"])
        return found["SubnetId"]
    created = ctx.act("create", "subnet", retry_transient, ctx.ec2.create_subnet, VpcId=vpc_id,
                      CidrBlock=str(spec.subnet_cidr), TagSpecifications=tag_spec(spec, "subnet", "subnet"),
                      detail=str(spec.subnet_cidr))
    return planned("subnet") if created is None else created["Subnet"]["SubnetId"]


# Internet gateway ---------------------------------------------------------------------------------

def ensure_internet_gateway(ctx: Context, vpc_id: str) -> str:
    """Internet gateway attached to the VPC (2.11)."""
    spec = ctx.spec
    found = _one(ctx.ec2.describe_internet_gateways(Filters=tag_filters(spec.name, "internet-gateway"))["InternetGateways"],
                 "internet gateway", spec.name)
    if found is not None:
        igw_id = found["InternetGatewayId"]
        attached = {a["VpcId"] for a in found.get("Attachments", [])}
        ctx.note("internet-gateway", igw_id)
    else:
        created = ctx.act("create", "internet-gateway", ctx.ec2.create_internet_gateway,
                          TagSpecifications=tag_spec(spec, "internet-gateway", "internet-gateway"))
        igw_id = planned("internet-gateway") if created is None else created["InternetGateway"]["InternetGatewayId"]
        attached = set()
    if vpc_id not in attached:
        if attached:
            raise ClusterStateError(f"internet gateway {igw_id} is attached to {attached}, not the cluster's VPC {vpc_id}")
        ctx.act("attach", "internet-gateway", retry_transient, ctx.ec2.attach_internet_gateway,
                InternetGatewayId=igw_id, VpcId=vpc_id, detail=f"to {vpc_id}")
    return igw_id


# Route table --------------------------------------------------------------------------------------

def ensure_route_table(ctx: Context, vpc_id: str, subnet_id: str, igw_id: str) -> str:
    """Route table associated with the subnet, default route to the internet gateway (2.12)."""
    spec = ctx.spec
    found = _one(ctx.ec2.describe_route_tables(Filters=tag_filters(spec.name, "route-table"))["RouteTables"],
                 "route table", spec.name)
    if found is not None:
        rt_id = found["RouteTableId"]
        associated = {a.get("SubnetId") for a in found.get("Associations", [])}
        routes = {r.get("DestinationCidrBlock"): r.get("GatewayId") for r in found.get("Routes", [])}
        ctx.note("route-table", rt_id)
    else:
        created = ctx.act("create", "route-table", retry_transient, ctx.ec2.create_route_table, VpcId=vpc_id,
                          TagSpecifications=tag_spec(spec, "route-table", "route-table"))
        rt_id = planned("route-table") if created is None else created["RouteTable"]["RouteTableId"]
        associated, routes = set(), {}
    if subnet_id not in associated:
        ctx.act("modify", "route-table association", retry_transient, ctx.ec2.associate_route_table,
                RouteTableId=rt_id, SubnetId=subnet_id, detail=f"with {subnet_id}")
    if routes.get("0.0.0.0/0") != igw_id:
        action = ctx.ec2.replace_route if "0.0.0.0/0" in routes else ctx.ec2.create_route
        ctx.act("create", "route 0.0.0.0/0", retry_transient, action, RouteTableId=rt_id,
                DestinationCidrBlock="0.0.0.0/0", GatewayId=igw_id, detail=f"via {igw_id}")
    return rt_id


# Security group -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class IngressRule:
    """One ingress permission: protocol, port range, source CIDR."""

    protocol: str
    from_port: int
    to_port: int
    cidr: str
    description: str

    @property
    def key(self) -> str:
        ports = "all" if self.protocol == "icmp" else f"{self.from_port}-{self.to_port}"
        return f"{self.protocol}/{ports}/{self.cidr}"

    def permission(self) -> dict:
        return {
            "IpProtocol": self.protocol,
            "FromPort": self.from_port,
            "ToPort": self.to_port,
            "IpRanges": [{"CidrIp": self.cidr, "Description": self.description}],
        }


def ingress_rules(spec: ClusterSpec) -> list[IngressRule]:
    """The seed's five rules (2.13): etcd and NodePorts from the subnet, API, SSH and ICMP."""
    subnet = str(spec.subnet_cidr)
    rules = [
        IngressRule("tcp", 2379, 2380, subnet, "etcd client and peer"),
        IngressRule("tcp", 30000, 32767, subnet, "NodePort services"),
    ]
    rules += [IngressRule("tcp", API_PORT, API_PORT, str(c), "Kubernetes API") for c in spec.api_ingress_cidrs]
    rules += [IngressRule("tcp", 22, 22, str(c), "SSH") for c in spec.ssh_ingress_cidrs]
    rules += [IngressRule("icmp", -1, -1, str(c), "ICMP") for c in spec.icmp_ingress_cidrs]
    return rules


def find_security_group(ctx: Context) -> dict | None:
    groups = ctx.ec2.describe_security_groups(Filters=tag_filters(ctx.spec.name, "security-group"))["SecurityGroups"]
    return _one(groups, "security group", ctx.spec.name)


def ensure_security_group(ctx: Context, vpc_id: str) -> str:
    """The cluster's security group, named after the cluster (2.13)."""
    spec = ctx.spec
    found = find_security_group(ctx)
    if found is not None:
        ctx.note("security-group", found["GroupId"])
        return found["GroupId"]
    created = ctx.act("create", "security-group", retry_transient, ctx.ec2.create_security_group,
                      GroupName=spec.name, Description="Kubernetes cluster security group", VpcId=vpc_id,
                      TagSpecifications=tag_spec(spec, "security-group", "security-group"))
    return planned("security-group") if created is None else created["GroupId"]


def existing_rule_keys(group: dict) -> set[str]:
    keys = set()
    for perm in group.get("IpPermissions", []):
        protocol = perm.get("IpProtocol")
        for rng in perm.get("IpRanges", []):
            if protocol == "icmp":
                keys.add(f"icmp/all/{rng['CidrIp']}")
            else:
                keys.add(f"{protocol}/{perm.get('FromPort')}-{perm.get('ToPort')}/{rng['CidrIp']}")
    return keys


def ensure_ingress_rule(ctx: Context, group_id: str, rule: IngressRule) -> str:
    """One ingress permission on the security group; returns the rule's key."""
    present = False
    if not is_planned(group_id):
        group = retry_transient(ctx.ec2.describe_security_groups, GroupIds=[group_id])["SecurityGroups"][0]
        present = rule.key in existing_rule_keys(group)
    if present:
        ctx.note(f"ingress {rule.key}")
        return rule.key
    try:
        ctx.act("create", f"ingress {rule.key}", retry_transient, ctx.ec2.authorize_security_group_ingress,
                GroupId=group_id, IpPermissions=[rule.permission()], detail=rule.description)
    except ClientError as exc:
        if error_code(exc) != "InvalidPermission.Duplicate":
            raise
    return rule.key


# Network load balancer ----------------------------------------------------------------------------

def _elb_tags(ctx: Context, arns: list[str]) -> dict[str, dict[str, str]]:
    if not arns:
        return {}
    out = {}
    for i in range(0, len(arns), 20):
        reply = retry_transient(ctx.elbv2.describe_tags, ResourceArns=arns[i : i + 20])
        out.update({d["ResourceArn"]: tags_dict(d.get("Tags")) for d in reply["TagDescriptions"]})
    return out


def _find_named_elb_resource(ctx: Context, kind: str, describe, key: str, arn_key: str, not_found: str) -> dict | None:
    """An ELBv2 resource named after the cluster, checked to carry the cluster's tag."""
    try:
        found = describe(Names=[ctx.spec.name])[key]
    except ClientError as exc:
        if error_code(exc) == not_found:
            return None
        raise
    tags = _elb_tags(ctx, [item[arn_key] for item in found])
    ours = [item for item in found if tags.get(item[arn_key], {}).get(CLUSTER_TAG) == ctx.spec.name]
    if found and not ours:
        raise ClusterStateError(f"a {kind} named {ctx.spec.name!r} exists but does not belong to this cluster")
    return _one(ours, kind, ctx.spec.name)


def find_load_balancer(ctx: Context) -> dict | None:
    return _find_named_elb_resource(ctx, "load balancer", ctx.elbv2.describe_load_balancers, "LoadBalancers",
                                    "LoadBalancerArn", "LoadBalancerNotFound")


def ensure_load_balancer(ctx: Context, subnet_id: str) -> dict[str, str]:
    """Internet-facing network load balancer in the subnet (2.14); returns its ARN and DNS name."""
    spec = ctx.spec
    found = find_load_balancer(ctx)
    if found is not None:
        ctx.note("load-balancer", found["DNSName"])
        return {"arn": found["LoadBalancerArn"], "dns_name": found["DNSName"]}
    created = ctx.act("create", "load-balancer", retry_transient, ctx.elbv2.create_load_balancer,
                      Name=spec.name, Subnets=[subnet_id], Scheme="internet-facing", Type="network",
                      Tags=cluster_tags(spec, "load-balancer"), detail="network, internet-facing")
    if created is None:
        return {"arn": planned("load-balancer"), "dns_name": planned("load-balancer DNS name")}
    lb = created["LoadBalancers"][0]
    retry_transient(ctx.elbv2.get_waiter("load_balancer_available").wait, LoadBalancerArns=[lb["LoadBalancerArn"]],
                    WaiterConfig={"Delay": 5, "MaxAttempts": 120})
    return {"arn": lb["LoadBalancerArn"], "dns_name": lb["DNSName"]}


def find_target_group(ctx: Context) -> dict | None:
    return _find_named_elb_resource(ctx, "target group", ctx.elbv2.describe_target_groups, "TargetGroups",
                                    "TargetGroupArn", "TargetGroupNotFound")


def ensure_target_group(ctx: Context, vpc_id: str) -> str:
    """TCP 6443 target group of type ip (2.15), client-IP preservation off so masters do not hairpin."""
    spec = ctx.spec
    found = find_target_group(ctx)
    if found is not None:
        ctx.note("target-group", found["TargetGroupArn"])
        tg_arn = found["TargetGroupArn"]
    else:
        created = ctx.act("create", "target-group", retry_transient, ctx.elbv2.create_target_group,
                          Name=spec.name, Protocol="TCP", Port=API_PORT, VpcId=vpc_id, TargetType="ip",
                          Tags=cluster_tags(spec, "target-group"), detail=f"TCP {API_PORT}, type ip")
        if created is None:
            return planned("target-group")
        tg_arn = created["TargetGroups"][0]["TargetGroupArn"]
    attrs = {a["Key"]: a["Value"] for a in
             retry_transient(ctx.elbv2.describe_target_group_attributes, TargetGroupArn=tg_arn)["Attributes"]}
    if attrs.get("preserve_client_ip.enabled") != "false":
        ctx.act("modify", "target-group preserve_client_ip", retry_transient, ctx.elbv2.modify_target_group_attributes,
                TargetGroupArn=tg_arn, Attributes=[{"Key": "preserve_client_ip.enabled", "Value": "false"}])
    return tg_arn


def ensure_targets(ctx: Context, tg_arn: str) -> list[str]:
    """Register exactly the master IPs in the target group (2.16)."""
    wanted = [str(n.private_ip) for n in ctx.spec.masters]
    registered: set[str] = set()
    if not is_planned(tg_arn):
        health = retry_transient(ctx.elbv2.describe_target_health, TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        registered = {d["Target"]["Id"] for d in health}
    missing = [ip for ip in wanted if ip not in registered]
    extra = sorted(registered - set(wanted))
    if missing:
        ctx.act("register", "targets", retry_transient, ctx.elbv2.register_targets, TargetGroupArn=tg_arn,
                Targets=[{"Id": ip, "Port": API_PORT} for ip in missing], detail=", ".join(missing))
    if extra:
        ctx.act("remove", "targets", retry_transient, ctx.elbv2.deregister_targets, TargetGroupArn=tg_arn,
                Targets=[{"Id": ip, "Port": API_PORT} for ip in extra], detail=", ".join(extra))
    if not missing and not extra:
        ctx.note("targets", ", ".join(wanted))
    return wanted


def ensure_listener(ctx: Context, lb_arn: str, tg_arn: str) -> str:
    """TCP 6443 listener forwarding to the target group (2.17)."""
    if not is_planned(lb_arn):
        listeners = retry_transient(ctx.elbv2.describe_listeners, LoadBalancerArn=lb_arn)["Listeners"]
        for listener in listeners:
            if listener["Port"] == API_PORT:
                forwards = [a.get("TargetGroupArn") for a in listener.get("DefaultActions", [])]
                if tg_arn not in forwards:
                    ctx.act("modify", "listener 6443", retry_transient, ctx.elbv2.modify_listener,
                            ListenerArn=listener["ListenerArn"],
                            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
                else:
                    ctx.note("listener 6443", listener["ListenerArn"])
                return listener["ListenerArn"]
    created = ctx.act("create", "listener 6443", retry_transient, ctx.elbv2.create_listener, LoadBalancerArn=lb_arn,
                      Protocol="TCP", Port=API_PORT, DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
                      Tags=cluster_tags(ctx.spec, "listener"))
    return planned("listener") if created is None else created["Listeners"][0]["ListenerArn"]


@dataclass
class NetworkFacts:
    """IDs the compute phase and later phases need, read back from AWS."""

    vpc_id: str
    subnet_id: str
    security_group_id: str
    route_table_id: str
    load_balancer_dns: str

    def as_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


def phase_ids(vpc_id: str, subnet_id: str, security_group_id: str, route_table_id: str,
              load_balancer_dns: str) -> dict[str, str]:
    """What the network phase returns, as `NetworkFacts.as_dict` has it."""
    return NetworkFacts(vpc_id, subnet_id, security_group_id, route_table_id, load_balancer_dns).as_dict()


def read_network(ctx: Context) -> NetworkFacts:
    """Look up an already built network; fails clearly when a part is missing."""
    spec = ctx.spec
    vpc = find_vpc(ctx)
    subnets = ctx.ec2.describe_subnets(Filters=tag_filters(spec.name, "subnet"))["Subnets"]
    group = find_security_group(ctx)
    tables = ctx.ec2.describe_route_tables(Filters=tag_filters(spec.name, "route-table"))["RouteTables"]
    lb = find_load_balancer(ctx)
    missing = [name for name, value in (("vpc", vpc), ("subnet", subnets), ("security group", group),
                                        ("route table", tables), ("load balancer", lb)) if not value]
    if missing:
        raise ClusterStateError(
            f"cluster {spec.name!r} has no {', '.join(missing)}: run the network phase first (--phases network,...)"
        )
    return NetworkFacts(vpc["VpcId"], subnets[0]["SubnetId"], group["GroupId"], tables[0]["RouteTableId"], lb["DNSName"])
