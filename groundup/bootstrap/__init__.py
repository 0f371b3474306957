"""Bootstrapping the nodes (kubernetes-the-hard-way 07-11), rendered from the spec: every unit, config
file and cluster manifest, as bytes. Pure: no Prefect, no I/O; the same spec gives the same bytes, so a
re-run changes nothing on the nodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from groundup.spec import ClusterSpec, Node, Role


@dataclass(frozen=True)
class RenderedFile:
    """One file the bootstrap places on a node."""

    path: str
    data: bytes = field(repr=False)
    mode: int = 0o644


@dataclass(frozen=True)
class Directory:
    """A directory the bootstrap creates with this mode (e.g. etcd's data dir, 0700)."""

    path: str
    mode: int


@dataclass
class NodePlan:
    """Everything the bootstrap does on one node: files, directories, and units in start order with,
    per unit, every path it reads (binaries, distributed certificates and kubeconfigs, rendered files)."""

    node: str
    files: list[RenderedFile] = field(default_factory=list)
    dirs: list[Directory] = field(default_factory=list)
    units: list[str] = field(default_factory=list)
    unit_inputs: dict[str, frozenset[str]] = field(default_factory=dict)

    def add_unit(self, name: str, unit: bytes, inputs: list[str], files: list[RenderedFile] = ()) -> None:
        path = f"/etc/systemd/system/{name}.service"
        self.files += [RenderedFile(path, unit), *files]
        self.units.append(name)
        self.unit_inputs[name] = frozenset([path, *inputs, *(f.path for f in files)])

    def file(self, path: str) -> RenderedFile:
        return next(f for f in self.files if f.path == path)


def node_plan(spec: ClusterSpec, node: Node, api_endpoint: str) -> NodePlan:
    """The plan of one node: a master runs etcd and the control plane, a worker containerd, kubelet, kube-proxy."""
    from groundup.bootstrap import control_plane, etcd, workers

    plan = NodePlan(node.short_name)
    if node.role is Role.master:
        etcd.add_etcd(plan, spec, node)
        control_plane.add_control_plane(plan, spec, node, api_endpoint)
    else:
        workers.add_worker(plan, spec, node)
    return plan
