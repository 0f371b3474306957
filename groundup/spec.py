"""The cluster spec: every value the guide hard-codes, typed, described and validated.

The spec is the one parameter of the `build-cluster` flow; the Prefect UI renders its
fields as the run form. Validation runs before any AWS call and names the failing field.
"""

from __future__ import annotations

import re
from enum import Enum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from groundup.versions import (COMPONENT_FIELDS, DEFAULT_KUBERNETES_VERSION, VersionPolicyError, check_component,
                               kubernetes_line)

CANONICAL_OWNER_ID = "099720109477"
UBUNTU_LTS = {"focal": "20.04", "jammy": "22.04", "noble": "24.04"}
_VERSION = re.compile(r"^v?\d+\.\d+\.\d+$")
_AWS_NAME = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?$")
_REGION = re.compile(r"^[a-z]{2}(?:-gov)?-[a-z]+-\d$")
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
# POSIX portable login names as Debian's and Ubuntu's useradd accept them by default.
_LOGIN_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_DNS_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_BASTION = re.compile(r"^(?:[a-z_][a-z0-9_-]{0,31}@)?[A-Za-z0-9.-]+(?::\d{1,5})?$")
# A spec is a few hundred nodes at most; more after expanding YAML aliases is an alias bomb.
MAX_SPEC_NODES = 100_000
MAX_SPEC_BYTES = 1 << 20
# ELBv2 load balancer and target group names: at most 32 characters.
MAX_NAME_LENGTH = 32


class SpecError(ValueError):
    """A cluster spec that cannot be built; the message names each failing field."""


class KeyAlgorithm(str, Enum):
    rsa2048 = "rsa-2048"
    ecdsa_p256 = "ecdsa-p256"


class NodeAccess(str, Enum):
    """How the flows reach a node over SSH."""

    public_ip = "public_ip"
    private_ip = "private_ip"
    bastion = "bastion"


class Role(str, Enum):
    master = "master"
    worker = "worker"


class CertificateSubject(BaseModel):
    """Subject fields shared by every certificate (seed step 4, the `names` block)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    country: str = Field("UK", description="C", min_length=2, max_length=2)
    locality: str = Field("England", description="L")
    state: str = Field("London", description="ST")
    organization: str = Field("Kubernetes", description="O of the CA and server certificates")
    organizational_unit: str = Field("DAREY.IO DEVOPS", description="OU")


class PKISettings(BaseModel):
    """Certificate authority settings (seed step 4, ca-config.json and ca-csr.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: CertificateSubject = Field(default_factory=CertificateSubject, description="Certificate subject")
    ca_common_name: str = Field("Kubernetes", description="CN of the certificate authority")
    validity_hours: int = Field(8760, gt=0, le=87600, description="Validity of every certificate, in hours")
    key_algorithm: KeyAlgorithm = Field(KeyAlgorithm.rsa2048, description="Key algorithm of every key")


class SSHSettings(BaseModel):
    """How the flows reach the nodes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = Field("ubuntu", description="Login user on the nodes")
    access: NodeAccess = Field(
        NodeAccess.public_ip,
        description="Address the flows connect to: the instance's public IP (AWS), its private IP "
        "(the local sandbox, or a runner inside the VPC); 'bastion' is not implemented yet",
    )
    bastion: str | None = Field(None, description="user@host:port of a bastion, for access 'bastion' (not implemented yet)")
    port: int = Field(22, ge=1, le=65535, description="SSH port on the nodes")
    boot_timeout_s: float = Field(
        300, gt=0, le=3600, description="How long a node may stay unreachable (booting, sshd not up) before its task fails"
    )

    @field_validator("user")
    @classmethod
    def _login_name(cls, value: str) -> str:
        if not _LOGIN_NAME.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a POSIX login name: lower-case letters, digits, '_' and '-', "
                "starting with a letter or '_', at most 32 characters"
            )
        return value

    @field_validator("bastion")
    @classmethod
    def _bastion(cls, value: str | None) -> str | None:
        if value is not None and not _BASTION.fullmatch(value):
            raise ValueError(f"{value!r} is not user@host:port (user a POSIX login name, host a DNS name or IP)")
        return value


class Node(BaseModel):
    """One instance of the cluster, with everything derived from the spec."""

    model_config = ConfigDict(frozen=True)

    role: Role
    index: int
    name: str = Field(description="Instance name tag, e.g. k8s-cluster-from-ground-up-worker-0")
    short_name: str = Field(description="master-0, worker-2: the user-data name")
    private_ip: IPv4Address
    hostname: str = Field(description="EC2 private DNS host name, ip-172-31-0-20")
    pod_cidr: IPv4Network | None = None

    @property
    def user_data(self) -> str:
        """The seed's user-data string (`name=...|pod-cidr=...`)."""
        if self.pod_cidr is None:
            return f"name={self.short_name}"
        return f"name={self.short_name}|pod-cidr={self.pod_cidr}"


Cidr = Annotated[IPv4Network, Field(description="IPv4 CIDR block")]


class ClusterSpec(BaseModel):
    """A self-managed Kubernetes cluster on EC2, built the way the guide builds it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        "k8s-cluster-from-ground-up",
        description="Cluster name: Name tag, key pair, security group, NLB and target group name",
    )
    region: str = Field("us-east-2", description="AWS region")
    vpc_cidr: Cidr = Field(IPv4Network("172.31.0.0/16"), description="VPC CIDR block")
    subnet_cidr: Cidr = Field(IPv4Network("172.31.0.0/24"), description="The cluster's subnet, inside the VPC")
    master_count: int = Field(3, ge=1, le=7, description="Control-plane nodes (etcd members): odd")
    worker_count: int = Field(3, ge=0, le=250, description="Worker nodes: at least one (pods, CoreDNS included, run only on workers)")
    master_ips: list[IPv4Address] | None = Field(
        None, description="Private IP per master; default: subnet .10, .11, ..."
    )
    worker_ips: list[IPv4Address] | None = Field(
        None, description="Private IP per worker; default: subnet .20, .21, ..."
    )
    pod_cidr: Cidr = Field(IPv4Network("172.20.0.0/16"), description="Cluster pod range, outside the VPC")
    worker_pod_cidrs: list[IPv4Network] | None = Field(
        None, description="Pod CIDR per worker; default: 172.20.i.0/24 inside pod_cidr"
    )
    service_cidr: Cidr = Field(IPv4Network("10.32.0.0/24"), description="Service cluster IP range")
    cluster_domain: str = Field("cluster.local", description="Cluster DNS domain")
    instance_type: str = Field("t2.micro", description="EC2 instance type of every node")
    ubuntu_release: str = Field("noble", description="Ubuntu LTS codename or version: focal, jammy, noble")
    kubernetes_version: str = Field(
        DEFAULT_KUBERNETES_VERSION,
        description="Kubernetes release: one of the three minors upstream supports (groundup.versions)",
    )
    etcd_version: str | None = Field(None, description="etcd release; empty: the one that Kubernetes release is tested with")
    containerd_version: str | None = Field(
        None, description="containerd release (workers); empty: the one that Kubernetes release is tested with")
    runc_version: str | None = Field(
        None, description="runc release (workers); empty: the one that containerd is tested with")
    cni_plugins_version: str | None = Field(
        None, description="CNI plugins release (workers); empty: the one that Kubernetes release names")
    crictl_version: str | None = Field(
        None, description="crictl (cri-tools) release (workers); empty: the one that containerd is tested with")
    coredns_version: str | None = Field(
        None, description="CoreDNS release applied by the bootstrap; empty: kubeadm's for that Kubernetes release")
    kube_proxy_conntrack_max_per_core: int | None = Field(
        None, ge=0, le=1 << 20,
        description="kube-proxy's conntrack.maxPerCore; empty: kube-proxy's default (it raises the kernel's "
        "nf_conntrack_max); 0: leave the kernel's value alone, for nodes whose conntrack table size is not "
        "theirs to set (a node in a network namespace, as in the local sandbox)",
    )
    smoke_workloads: bool = Field(
        True,
        description="The smoke test also runs workloads (an nginx deployment, its logs and exec, a NodePort, DNS "
        "from a pod); they pull images, so turn this off only where the nodes can reach no image registry",
    )
    release_mirror: str | None = Field(
        None,
        description="Base URL of a mirror that holds upstream's release files under "
        "<mirror>/<upstream host>/<upstream path> (checksum files beside them); empty: download from upstream",
    )
    associate_public_ip: bool = Field(True, description="Give every instance a public IP (the seed does)")
    ssh_ingress_cidrs: list[IPv4Network] = Field(
        [IPv4Network("0.0.0.0/0")], description="Who may reach port 22 (the seed: anywhere)"
    )
    api_ingress_cidrs: list[IPv4Network] = Field(
        [IPv4Network("0.0.0.0/0")], description="Who may reach the API on 6443"
    )
    icmp_ingress_cidrs: list[IPv4Network] = Field(
        [IPv4Network("0.0.0.0/0")], description="Who may send ICMP"
    )
    ssh: SSHSettings = Field(default_factory=SSHSettings, description="How the flows reach nodes")
    pki: PKISettings = Field(default_factory=PKISettings, description="Certificate settings")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra tags on every resource")

    @field_validator("name")
    @classmethod
    def _aws_name(cls, value: str) -> str:
        if not _AWS_NAME.fullmatch(value):
            raise ValueError("use letters, digits and hyphens, not starting or ending with a hyphen")
        if len(value) > MAX_NAME_LENGTH:
            raise ValueError(f"at most {MAX_NAME_LENGTH} characters (AWS limit for load balancer names)")
        if value.lower().startswith("internal-"):
            raise ValueError("AWS rejects load balancer names starting with 'internal-'")
        return value

    @field_validator("cluster_domain")
    @classmethod
    def _cluster_domain(cls, value: str) -> str:
        if not _DNS_NAME.fullmatch(value):
            raise ValueError("not a DNS domain such as cluster.local (lower-case letters, digits, '-' and '.')")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError("not an AWS region name such as us-east-2")
        return value

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        if not _INSTANCE_TYPE.fullmatch(value):
            raise ValueError("not an EC2 instance type such as t3.medium")
        return value

    @field_validator("ubuntu_release")
    @classmethod
    def _ubuntu_release(cls, value: str) -> str:
        by_version = {v: k for k, v in UBUNTU_LTS.items()}
        codename = by_version.get(value, value)
        if codename not in UBUNTU_LTS:
            raise ValueError(f"must be a current Ubuntu LTS: {', '.join(f'{k} ({v})' for k, v in UBUNTU_LTS.items())}")
        return codename

    @model_validator(mode="before")
    @classmethod
    def _component_defaults(cls, data: object) -> object:
        """Fill each component version left empty with the one the chosen Kubernetes release is tested with."""
        if not isinstance(data, dict):
            return data
        try:
            line = kubernetes_line(str(data.get("kubernetes_version") or DEFAULT_KUBERNETES_VERSION))
        except VersionPolicyError:
            return data
        filled = dict(data)
        for name, default in line.defaults().items():
            if filled.get(name) in (None, ""):
                filled[name] = default
        return filled

    @field_validator("kubernetes_version")
    @classmethod
    def _kubernetes_version(cls, value: str) -> str:
        if not _VERSION.fullmatch(value):
            raise ValueError(f"must look like {DEFAULT_KUBERNETES_VERSION}")
        version = value.lstrip("v")
        try:
            kubernetes_line(version)
        except VersionPolicyError as exc:
            raise ValueError(str(exc)) from None
        return version

    @field_validator(*COMPONENT_FIELDS)
    @classmethod
    def _component_version(cls, value: str | None) -> str | None:
        if value is not None and not _VERSION.fullmatch(value):
            raise ValueError("must look like 3.7.4")
        return None if value is None else value.lstrip("v")

    @field_validator("worker_count")
    @classmethod
    def _some_worker(cls, value: int) -> int:
        if value < 1:
            raise ValueError("at least 1: pods run only on workers, so with none nothing could run a pod, "
                             "CoreDNS included")
        return value

    @field_validator("release_mirror")
    @classmethod
    def _mirror(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not re.fullmatch(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$", value):
            raise ValueError("must be an http(s) URL such as http://10.240.0.1:8080")
        return value.rstrip("/")

    @field_validator("master_count")
    @classmethod
    def _odd_masters(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("etcd needs an odd number of members (1, 3, 5 or 7)")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, tag in value.items():
            if not key or len(key) > 128 or key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r}: 1-128 characters, not starting with 'aws:'")
            if key in ("Name",) or key.startswith("groundup/"):
                raise ValueError(f"tag key {key!r} is set by groundup itself")
            if len(tag) > 256:
                raise ValueError(f"tag {key!r}: value longer than 256 characters")
        return value

    @model_validator(mode="after")
    def _topology(self) -> ClusterSpec:
        errors: list[str] = []
        if not self.subnet_cidr.subnet_of(self.vpc_cidr):
            errors.append(f"subnet_cidr: {self.subnet_cidr} is not inside vpc_cidr {self.vpc_cidr}")
        if not 16 <= self.vpc_cidr.prefixlen <= 28:
            errors.append("vpc_cidr: AWS allows prefix lengths /16 to /28")
        for field in ("pod_cidr", "service_cidr"):
            cidr: IPv4Network = getattr(self, field)
            if cidr.overlaps(self.vpc_cidr):
                errors.append(f"{field}: {cidr} overlaps vpc_cidr {self.vpc_cidr}")
        if self.pod_cidr.overlaps(self.service_cidr):
            errors.append(f"service_cidr: {self.service_cidr} overlaps pod_cidr {self.pod_cidr}")
        errors += self._check_ips("master_ips", self.master_ips, self.master_count)
        errors += self._check_ips("worker_ips", self.worker_ips, self.worker_count)
        if not errors:
            all_ips = [n.private_ip for n in self.nodes]
            for ip in {ip for ip in all_ips if all_ips.count(ip) > 1}:
                errors.append(f"worker_ips: {ip} is used by more than one node (masters and workers share the subnet)")
        errors += self._check_pod_cidrs()
        for name in COMPONENT_FIELDS:
            try:
                check_component(name, getattr(self, name), self.kubernetes_version)
            except VersionPolicyError as exc:
                errors.append(f"{name}: {exc}")
        if self.ssh.access is NodeAccess.bastion:
            errors.append("ssh.access: 'bastion' is not implemented yet, the flows cannot reach nodes through a "
                          "bastion: use public_ip, as the guide does, or private_ip from a runner inside the VPC")
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _check_ips(self, field: str, ips: list[IPv4Address] | None, count: int) -> list[str]:
        if ips is None:
            first = 10 if field == "master_ips" else 20
            last = int(self.subnet_cidr.broadcast_address) - 1
            if int(self.subnet_cidr.network_address) + first + count - 1 > last:
                return [f"{field}: the defaults (.{first}+i) do not fit {count} nodes in {self.subnet_cidr}"]
            return []
        errors = []
        if len(ips) != count:
            errors.append(f"{field}: {len(ips)} addresses for {count} nodes")
        reserved = _aws_reserved(self.subnet_cidr)
        for ip in ips:
            if ip not in self.subnet_cidr:
                errors.append(f"{field}: {ip} is outside subnet_cidr {self.subnet_cidr}")
            elif ip in reserved:
                errors.append(f"{field}: {ip} is reserved by AWS in {self.subnet_cidr}")
        for ip in {ip for ip in ips if ips.count(ip) > 1}:
            errors.append(f"{field}: {ip} appears more than once")
        return errors

    def _check_pod_cidrs(self) -> list[str]:
        cidrs = self.worker_pod_cidrs
        if cidrs is None:
            room = 2 ** (24 - self.pod_cidr.prefixlen) if self.pod_cidr.prefixlen <= 24 else 0
            if self.worker_count > room:
                return [f"worker_pod_cidrs: pod_cidr {self.pod_cidr} has no room for {self.worker_count} /24s"]
            return []
        errors = []
        if len(cidrs) != self.worker_count:
            errors.append(f"worker_pod_cidrs: {len(cidrs)} ranges for {self.worker_count} workers")
        for i, cidr in enumerate(cidrs):
            if cidr.overlaps(self.vpc_cidr):
                errors.append(f"worker_pod_cidrs: {cidr} overlaps vpc_cidr {self.vpc_cidr}")
            if cidr.overlaps(self.service_cidr):
                errors.append(f"worker_pod_cidrs: {cidr} overlaps service_cidr {self.service_cidr}")
            if not cidr.subnet_of(self.pod_cidr):
                errors.append(f"worker_pod_cidrs: {cidr} is outside pod_cidr {self.pod_cidr}")
            for other in cidrs[i + 1 :]:
                if cidr.overlaps(other):
                    errors.append(f"worker_pod_cidrs: {cidr} overlaps {other} of another worker")
        return errors

    @property
    def nodes(self) -> list[Node]:
        """Masters then workers, with IPs, host names, pod CIDRs and user-data."""
        base = int(self.subnet_cidr.network_address)
        masters = self.master_ips or [IPv4Address(base + 10 + i) for i in range(self.master_count)]
        workers = self.worker_ips or [IPv4Address(base + 20 + i) for i in range(self.worker_count)]
        pods = self.worker_pod_cidrs or [
            IPv4Network((int(self.pod_cidr.network_address) + (i << 8), 24)) for i in range(self.worker_count)
        ]
        nodes = [self._node(Role.master, i, ip, None) for i, ip in enumerate(masters)]
        nodes += [self._node(Role.worker, i, ip, pods[i] if i < len(pods) else None) for i, ip in enumerate(workers)]
        return nodes

    def _node(self, role: Role, index: int, ip: IPv4Address, pod_cidr: IPv4Network | None) -> Node:
        short = f"{role.value}-{index}"
        return Node(
            role=role,
            index=index,
            name=f"{self.name}-{short}",
            short_name=short,
            private_ip=ip,
            hostname="ip-" + str(ip).replace(".", "-"),
            pod_cidr=pod_cidr,
        )

    @property
    def masters(self) -> list[Node]:
        return [n for n in self.nodes if n.role is Role.master]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role is Role.worker]

    @property
    def ubuntu_version(self) -> str:
        return UBUNTU_LTS[self.ubuntu_release]

    @property
    def kubernetes_service_ip(self) -> IPv4Address:
        """First address of the service range: the `kubernetes` service, a SAN of the apiserver."""
        return self.service_cidr.network_address + 1

    @property
    def cluster_dns_ip(self) -> IPv4Address:
        return self.service_cidr.network_address + 10

    @property
    def internal_domain(self) -> str:
        """The DHCP domain name the seed sets: `<region>.compute.internal` (us-east-1: ec2.internal)."""
        return "ec2.internal" if self.region == "us-east-1" else f"{self.region}.compute.internal"


def _aws_reserved(subnet: IPv4Network) -> set[IPv4Address]:
    """AWS reserves the first four addresses and the last one of every subnet."""
    first = subnet.network_address
    return {first, first + 1, first + 2, first + 3, subnet.broadcast_address}


def parse_spec(data: dict) -> ClusterSpec:
    """Validate a spec mapping, raising SpecError with one line per failing field."""
    try:
        return ClusterSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_errors(exc)) from None


def format_errors(exc: ValidationError) -> str:
    """One line per failing field, `field.path: what is wrong`, under one heading."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines += [f"{loc}: {msg}"] if loc else msg.split("; ")
    return "invalid cluster spec:\n  " + "\n  ".join(lines)


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                raise SpecError(f"line {line}: a mapping key must be a plain value, not {type(key).__name__}") from None
            if first is not None:
                raise SpecError(f"line {line}: duplicate key {key!r} (first given on line {first}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in the document once every alias is expanded (aliases share node objects)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.MappingNode):
        total = 1 + sum(_expanded_size(k, sizes) + _expanded_size(v, sizes) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        total = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        total = 1
    sizes[id(node)] = min(total, MAX_SPEC_NODES + 1)
    return sizes[id(node)]


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"not valid YAML: {where}{problem}" + (f" ({context})" if context else "")


def parse_spec_text(text: str) -> ClusterSpec:
    """Validate the text of a spec file: one YAML mapping that names its cluster, no key given twice."""
    loader = _SpecLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise SpecError(_yaml_problem(exc)) from None
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
            raise SpecError("the spec file is empty: a cluster spec needs at least `name:` (see clusters/seed.yaml)")
        if _expanded_size(root, {}) > MAX_SPEC_NODES:
            raise SpecError(f"more than {MAX_SPEC_NODES} values once YAML aliases are expanded: refusing an alias bomb")
        try:
            data = loader.construct_document(root)
        except yaml.YAMLError as exc:
            raise SpecError(_yaml_problem(exc)) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecError(f"a cluster spec is a mapping of fields (name: ..., region: ...), not a {type(data).__name__}")
    if "name" in data:
        return parse_spec(data)
    unnamed = "name: required: every spec file names its cluster (e.g. `name: my-cluster`)"
    try:
        parse_spec(data)
    except SpecError as exc:
        raise SpecError(f"{exc}\n  {unnamed}") from None
    raise SpecError(f"invalid cluster spec:\n  {unnamed}")


def load_spec(path: str | Path) -> ClusterSpec:
    """Read and validate a YAML spec file; SpecError says what is wrong (without repeating the path)."""
    path = Path(path)
    try:
        if path.is_dir():
            raise SpecError("is a directory, not a spec file (e.g. clusters/seed.yaml)")
        if path.exists() and path.stat().st_size > MAX_SPEC_BYTES:
            raise SpecError(f"larger than {MAX_SPEC_BYTES // 1024} KiB: not a cluster spec")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError("no such file") from None
    except PermissionError:
        raise SpecError("cannot read the file (permission denied)") from None
    except OSError as exc:
        raise SpecError(f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (byte {exc.start}): a spec is a YAML file") from None
    return parse_spec_text(text)


def node_by_name(spec: ClusterSpec, short_name: str) -> Node:
    for node in spec.nodes:
        if node.short_name == short_name:
            return node
    raise KeyError(short_name)

