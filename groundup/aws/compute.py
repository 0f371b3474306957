"""Seed step 3, create compute resources: Ubuntu AMI, SSH key pair, masters and workers.

The SSH key is generated here and only its public half goes to EC2 (ImportKeyPair): the private
key never crosses the network and is kept, encrypted, in the artifact store for later phases.
"""

from __future__ import annotations

from typing import Protocol

from botocore.exceptions import ClientError, WaiterError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from groundup.aws.core import (
    Change,
    ROLE_TAG,
    ClusterStateError,
    Context,
    describe_instances,
    error_code,
    planned,
    retry_transient,
    tag_filters,
    tag_spec,
    tags_dict,
)
from groundup.spec import CANONICAL_OWNER_ID, ClusterSpec, Node

LIVE_STATES = ["pending", "running", "stopping", "stopped"]
EVENTUAL_CONSISTENCY = ("InvalidInstanceID.NotFound",)


class AMINotFound(RuntimeError):
    """No image matches the spec's Ubuntu release: retrying will not help."""


class KeyStore(Protocol):
    def exists(self, relpath: str) -> bool: ...
    def read_private_key(self, relpath: str): ...
    def write_private_key(self, relpath: str, key) -> str: ...


def ssh_key_path(spec: ClusterSpec) -> str:
    """Where the cluster's SSH private key lives in the artifact store (the seed's ssh/<name>.id_rsa)."""
    return f"ssh/{spec.name}.id_rsa"


def ami_name_pattern(spec: ClusterSpec) -> str:
    return f"ubuntu/images/hvm-ssd*/ubuntu-{spec.ubuntu_release}-{spec.ubuntu_version}-amd64-server-*"


def find_ami(ctx: Context) -> str:
    """Newest Canonical Ubuntu LTS image for x86_64 on EBS (3.1)."""
    images = retry_transient(
        ctx.ec2.describe_images,
        Owners=[CANONICAL_OWNER_ID],
        Filters=[
            {"Name": "name", "Values": [ami_name_pattern(ctx.spec)]},
            {"Name": "architecture", "Values": ["x86_64"]},
            {"Name": "root-device-type", "Values": ["ebs"]},
            {"Name": "state", "Values": ["available"]},
        ],
    )["Images"]
    if not images:
        raise AMINotFound(
            f"ubuntu_release: no Canonical image matches {ami_name_pattern(ctx.spec)} in {ctx.spec.region}"
        )
    newest = max(images, key=lambda image: (image.get("CreationDate", ""), image["Name"]))
    ctx.note("ami", f"{newest['ImageId']} {newest['Name']}")
    return newest["ImageId"]


def load_or_create_ssh_key(spec: ClusterSpec, store: KeyStore | None, dry_run: bool = False) -> rsa.RSAPrivateKey | None:
    """The cluster's SSH key from the store, generated (RSA 3072) and stored on first use."""
    path = ssh_key_path(spec)
    if store is not None and store.exists(path):
        return store.read_private_key(path)
    if dry_run:
        return None
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if store is not None:
        store.write_private_key(path, key)
    return key


def openssh_public_key(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def ensure_key_pair(ctx: Context, store: KeyStore | None) -> str:
    """EC2 key pair named after the cluster holding the stored key's public half (3.2)."""
    spec = ctx.spec
    key = load_or_create_ssh_key(spec, store, ctx.dry_run)
    if key is None and store is not None:
        ctx.changes.append(Change("create", "ssh-key", f"RSA 3072, kept encrypted at {ssh_key_path(spec)}"))
    public = openssh_public_key(key) if key is not None else None
    try:
        pairs = ctx.ec2.describe_key_pairs(KeyNames=[spec.name], IncludePublicKey=True)["KeyPairs"]
    except ClientError as exc:
        if error_code(exc) != "InvalidKeyPair.NotFound":
            raise
        pairs = []
    if pairs:
        remote = (pairs[0].get("PublicKey") or "").split()[:2]
        if public is not None and remote and remote != public.split()[:2]:
            raise ClusterStateError(
                f"key pair {spec.name!r} in EC2 holds another public key than the stored "
                f"{ssh_key_path(spec)}; delete the key pair (groundup teardown) or restore the stored key"
            )
        ctx.note("key-pair", spec.name)
        return spec.name
    ctx.act("create", "key-pair", retry_transient, ctx.ec2.import_key_pair, KeyName=spec.name,
            PublicKeyMaterial=(public or "").encode(), TagSpecifications=tag_spec(spec, "key-pair", "key-pair"),
            detail="imported public key, private key in the artifact store")
    return spec.name


def live_instances_by_role(ctx: Context) -> dict[str, list[dict]]:
    """Every live instance of the cluster in one look, by role tag (a dry run's snapshot)."""
    found: dict[str, list[dict]] = {}
    for instance in describe_instances(
            ctx.ec2, tag_filters(ctx.spec.name) + [{"Name": "instance-state-name", "Values": LIVE_STATES}]):
        found.setdefault(tags_dict(instance.get("Tags")).get(ROLE_TAG, ""), []).append(instance)
    return found


def find_instance(ctx: Context, node: Node) -> dict | None:
    if ctx.live_instances is not None:
        instances = ctx.live_instances.get(node.short_name, [])
    else:
        instances = describe_instances(
            ctx.ec2,
            tag_filters(ctx.spec.name, node.short_name) + [{"Name": "instance-state-name", "Values": LIVE_STATES}])
    if len(instances) > 1:
        ids = ", ".join(i["InstanceId"] for i in instances)
        raise ClusterStateError(f"{node.name}: {len(instances)} live instances carry its tags ({ids}); expected one")
    return instances[0] if instances else None


def ensure_instance(ctx: Context, node: Node, ami_id: str, subnet_id: str, security_group_id: str, key_name: str) -> str:
    """One node (3.3, 3.4): fixed private IP, user-data, Name tag, source/dest check off, running."""
    spec = ctx.spec
    found = find_instance(ctx, node)
    if found is not None:
        instance_id = found["InstanceId"]
        if found.get("PrivateIpAddress") != str(node.private_ip):
            raise ClusterStateError(
                f"{node.name}: instance {instance_id} has {found.get('PrivateIpAddress')}, the spec says "
                f"{node.private_ip}; tear it down to move it"
            )
        ctx.note(f"instance {node.short_name}", f"{instance_id} {node.private_ip}")
        if found.get("SourceDestCheck", True):
            disable_source_dest_check(ctx, instance_id)
        if found["State"]["Name"] in ("stopping", "stopped"):
            ctx.act("start", f"instance {node.short_name}", retry_transient, ctx.ec2.start_instances,
                    InstanceIds=[instance_id])
        if found["State"]["Name"] != "running":
            if ctx.dry_run:
                ctx.changes.append(Change("wait", f"instance {node.short_name}", f"{found['State']['Name']} -> running"))
            else:
                wait_running(ctx, instance_id)
        return instance_id
    interface = {
        "DeviceIndex": 0,
        "SubnetId": subnet_id,
        "PrivateIpAddress": str(node.private_ip),
        "Groups": [security_group_id],
        "AssociatePublicIpAddress": spec.associate_public_ip,
    }
    created = ctx.act(
        "create", f"instance {node.short_name}", retry_transient, ctx.ec2.run_instances,
        ImageId=ami_id, InstanceType=spec.instance_type, KeyName=key_name, MinCount=1, MaxCount=1,
        UserData=node.user_data, NetworkInterfaces=[interface],
        TagSpecifications=tag_spec(spec, "instance", node.short_name, node.name)
        + tag_spec(spec, "volume", node.short_name, node.name),
        detail=f"{spec.instance_type} {node.private_ip} {node.user_data}",
    )
    if created is None:
        disable_source_dest_check(ctx, planned(f"instance {node.short_name}"))
        return planned(f"instance {node.short_name}")
    instance_id = created["Instances"][0]["InstanceId"]
    disable_source_dest_check(ctx, instance_id)
    wait_running(ctx, instance_id)
    return instance_id


def disable_source_dest_check(ctx: Context, instance_id: str) -> None:
    """Pod traffic is routed through the nodes, so EC2 must not drop it (`--no-source-dest-check`)."""
    ctx.act("modify", f"source/dest check {instance_id}", retry_transient, ctx.ec2.modify_instance_attribute,
            InstanceId=instance_id, SourceDestCheck={"Value": False}, codes=EVENTUAL_CONSISTENCY + ("RequestLimitExceeded",))


def wait_running(ctx: Context, instance_id: str, timeout_s: int = 600) -> None:
    """Wait for state running, riding out InvalidInstanceID.NotFound right after RunInstances."""
    waiter = ctx.ec2.get_waiter("instance_running")
    try:
        retry_transient(waiter.wait, InstanceIds=[instance_id],
                        WaiterConfig={"Delay": 2, "MaxAttempts": max(1, timeout_s // 2)}, codes=EVENTUAL_CONSISTENCY)
    except WaiterError as exc:
        raise RuntimeError(f"instance {instance_id} did not reach running: {exc.last_response.get('Error', exc)}") from None


def describe_nodes(ctx: Context) -> dict[str, dict[str, str | None]]:
    """Per node short name: instance ID, private and public IP, state (read-only, for later phases)."""
    instances = describe_instances(
        ctx.ec2, tag_filters(ctx.spec.name) + [{"Name": "instance-state-name", "Values": LIVE_STATES}]
    )
    by_role = {}
    for instance in instances:
        role = next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "groundup/role"), None)
        by_role[role] = {
            "instance_id": instance["InstanceId"],
            "private_ip": instance.get("PrivateIpAddress"),
            "public_ip": instance.get("PublicIpAddress"),
            "state": instance["State"]["Name"],
        }
    return {n.short_name: by_role[n.short_name] for n in ctx.spec.nodes if n.short_name in by_role}

