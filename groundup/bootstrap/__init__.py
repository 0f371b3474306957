"""What the bootstrap puts on each node, rendered from the spec (kubernetes-the-hard-way 07-11 with the
seed's HA topology): every systemd unit and config file, in start order, with what each unit reads.

Pure: no Prefect, no I/O. The same spec gives the same bytes, so a re-run changes no file.
The executor (`groundup/node_bootstrap.py`) places `files`, creates `dirs`, and (re)starts a unit
when a digest over its `unit_inputs` changed or it is not active.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from groundup.bootstrap import control_plane, etcd, workers
from groundup.bootstrap.layout import (AUDIT_LOG, AUDIT_LOG_DIR, AUDIT_POLICY, CNI_BRIDGE_CONF, CNI_LOOPBACK_CONF,
                                       CONTAINERD_CONFIG, CONTAINERD_DROP_INS, CONTAINERD_SOCKET, CRICTL_CONFIG,
                                       ETCD_DATA_DIR, KUBE_PROXY_CONFIG,
                                       KUBELET_CONFIG, KUBELET_DROP_INS, KUBELET_NO_CGROUP_CONTROLLERS,
                                       KUBELET_NO_CGROUP_DROP_IN, KUBELET_RESOLV_CONF, MODULES_LOAD,
                                       RESOURCE_LIMITS_NOTE, SCHEDULER_CONFIG, SYSCTL_CONF)
from groundup.bootstrap.units import Unit
from groundup.spec import ClusterSpec, Node, Role

CONFIG_MODE = 0o644
UNIT_MODE = 0o644
SECRET_DIR_MODE = 0o700


@dataclass(frozen=True)
class RenderedFile:
    """A file the bootstrap writes on a node (root-owned)."""

    path: str
    data: bytes
    mode: int = CONFIG_MODE


@dataclass(frozen=True)
class NodeDir:
    """A directory the executor creates before starting units: `mkdir -p` then `chmod mode` (root-owned)."""

    path: str
    mode: int


@dataclass(frozen=True)
class NodePlan:
    """One node's bootstrap: files to place, directories to create, units in start order.

    `unit_inputs[unit]` is every path the unit reads (its unit file, binaries, distributed certificates
    and kubeconfigs, rendered configs): restart it exactly when one of them changed.
    `made_on_node` lists paths the node itself creates at run time (sockets, links, logs) and by whom;
    they are named in configs but are nobody's input.
    """

    node: str
    role: Role
    files: tuple[RenderedFile, ...]
    dirs: tuple[NodeDir, ...]
    units: tuple[str, ...]
    unit_inputs: Mapping[str, frozenset[str]]
    made_on_node: Mapping[str, str]

    def file(self, path: str) -> RenderedFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(f"{self.node} has no rendered {path}; it has: {', '.join(f.path for f in self.files)}")

    def unit_file(self, unit: str) -> RenderedFile:
        return self.file(f"/etc/systemd/system/{unit}.service")


def master_units(spec: ClusterSpec, master: Node, api_endpoint: str) -> list[Unit]:
    """etcd first: the API server needs its quorum."""
    return [etcd.etcd_unit(spec, master), control_plane.apiserver_unit(spec, master, api_endpoint),
            control_plane.controller_manager_unit(spec, master), control_plane.scheduler_unit(master)]


def worker_units(worker: Node) -> list[Unit]:
    """Kernel settings, then the runtime, then its clients."""
    return [workers.node_prep_unit(), workers.containerd_unit(), workers.kubelet_unit(worker),
            workers.kube_proxy_unit(worker)]


def master_configs(master: Node) -> list[RenderedFile]:
    return [RenderedFile(AUDIT_POLICY, control_plane.audit_policy()),
            RenderedFile(SCHEDULER_CONFIG, control_plane.scheduler_config(master))]


def worker_configs(spec: ClusterSpec, worker: Node) -> list[RenderedFile]:
    return [
        RenderedFile(MODULES_LOAD, workers.modules_load()),
        RenderedFile(SYSCTL_CONF, workers.sysctl_conf()),
        RenderedFile(CONTAINERD_CONFIG, workers.containerd_config(spec)),
        RenderedFile(CRICTL_CONFIG, workers.crictl_config()),
        RenderedFile(KUBELET_NO_CGROUP_CONTROLLERS, workers.no_cgroup_controllers_config()),
        RenderedFile(CNI_BRIDGE_CONF, workers.bridge_conf(worker)),
        RenderedFile(CNI_LOOPBACK_CONF, workers.loopback_conf()),
        RenderedFile(KUBELET_CONFIG, workers.kubelet_config(spec, worker)),
        RenderedFile(KUBE_PROXY_CONFIG, workers.kube_proxy_config(spec, worker)),
    ]


def node_units(spec: ClusterSpec, node: Node, api_endpoint: str) -> list[Unit]:
    """The node's units as data (flags, reads), in start order."""
    return master_units(spec, node, api_endpoint) if node.role is Role.master else worker_units(node)


def node_plan(spec: ClusterSpec, node: Node, api_endpoint: str) -> NodePlan:
    """Everything the bootstrap renders for `node`; `api_endpoint` is the NLB's DNS name."""
    units = node_units(spec, node, api_endpoint)
    if node.role is Role.master:
        configs = master_configs(node)
        dirs = (NodeDir(ETCD_DATA_DIR, SECRET_DIR_MODE), NodeDir(AUDIT_LOG_DIR, SECRET_DIR_MODE))
        made = {AUDIT_LOG: "kube-apiserver"}
    else:
        configs = worker_configs(spec, node)
        dirs = (NodeDir(CONTAINERD_DROP_INS, 0o755), NodeDir(KUBELET_DROP_INS, 0o755))
        made = {CONTAINERD_SOCKET: "containerd", KUBELET_RESOLV_CONF: workers.NODE_PREP,
                KUBELET_NO_CGROUP_DROP_IN: workers.NODE_PREP, RESOURCE_LIMITS_NOTE: workers.NODE_PREP}
    files = tuple(configs) + tuple(RenderedFile(u.path, u.text().encode(), UNIT_MODE) for u in units)
    return NodePlan(
        node=node.short_name,
        role=node.role,
        files=files,
        dirs=dirs,
        units=tuple(u.name for u in units),
        unit_inputs={u.name: u.inputs for u in units},
        made_on_node=made,
    )


__all__ = ["NodeDir", "NodePlan", "RenderedFile", "node_plan", "node_units"]
