"""The sandbox's moto server, whose EC2 console output is what the sandbox's cloud-init printed.

The sandbox runs moto with these changes, so it behaves as EC2 does:
- GetConsoleOutput: moto answers with a fixed sample text; here the output of an instance is the
  file `<console_dir>/<instance_id>` when the sandbox's cloud-init wrote one (with the node's
  `BEGIN SSH HOST KEY KEYS` block), so the flows read host keys from the console output exactly as
  they do on AWS;
- TerminateInstances frees the instance's private IPs in its subnet, as EC2 does (moto frees them
  only when the Python object is garbage-collected), so a rebuild can launch at the same IPs; the
  tags of the volumes and network interfaces it deleted go with them; terminating a terminated
  instance changes nothing (moto would try to delete its network interfaces again);
- a network interface RunInstances creates is deleted when the instance terminates unless the
  request said `DeleteOnTermination: false`, as on EC2 (moto keeps it unless told true);
- an instance terminated more than `--forget-terminated-after` seconds ago (default 3600, as EC2)
  is forgotten: no call shows it any more, DescribeInstances naming it answers
  InvalidInstanceID.NotFound. Moto keeps every instance forever otherwise, and each
  DescribeInstances filters all of them (a day of builds made it several times slower);
- a resource's own tags are read from its entry in the tag store (moto scanned every tag of every
  resource for each one, so a tag-filtered DescribeInstances grew with the square of the instances held:
  45-86 ms with 300 terminated, 3 ms by id). Same answer, same order.

Started by `sandbox.moto.start_moto_server(..., console_dir=DIR)`.
"""

from __future__ import annotations

import argparse
import copy
import sys
import threading
import time
from pathlib import Path

FORGET_TERMINATED_AFTER = 3600.0
"""Seconds EC2 keeps showing a terminated instance (about an hour)."""
TOMBSTONE_SECONDS = 600.0
"""How long a forgotten reservation still resolves as a DescribeInstances NextToken."""


def _install_console_output(console_dir: Path) -> None:
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.ec2.responses import general
    from moto.ec2.utils import Base64EncodedString

    def get_console_output(self) -> ActionResult:
        instance = self.ec2_backend.get_instance(self._get_param("InstanceId"))
        path = console_dir / instance.id
        text = path.read_text() if path.is_file() else general.SAMPLE_CONSOLE_OUTPUT
        return ActionResult({
            "InstanceId": instance.id,
            "Timestamp": utcnow(),
            "Output": Base64EncodedString.from_raw_string(text),
        })

    general.General.get_console_output = get_console_output


def _release_ips_on_terminate() -> None:
    from moto.ec2.models.instances import Instance

    terminate = Instance.terminate

    def terminate_and_release(self):
        if self._state.name == "terminated":
            return copy.copy(self._state)
        volumes = [device.volume_id for device in self.block_device_mapping.values()]
        interfaces = [nic.id for nic in self.nics.values()]
        state = terminate(self)
        backend = self.ec2_backend
        deleted = [v for v in volumes if v not in backend.volumes] + [n for n in interfaces if n not in backend.enis]
        for resource_id in deleted:
            backend.tags.pop(resource_id, None)
        try:
            subnet = backend.get_subnet(self.subnet_id)
        except Exception:  # no subnet (EC2-Classic style launch): nothing to free
            return state
        for ip in list(self._private_ips):
            if subnet._subnet_ips.get(ip) is self:
                subnet.del_subnet_ip(ip)
        return state

    Instance.terminate = terminate_and_release


def _launch_interfaces_delete_on_termination() -> None:
    from moto.ec2.models.instances import Instance

    prep_nics = Instance.prep_nics

    def prep_nics_deleted_on_termination(self, nic_spec, *args, **kwargs):
        prep_nics(self, nic_spec, *args, **kwargs)
        given = {nic.get("NetworkInterfaceId") for nic in nic_spec} - {None}
        said = {int(nic["DeviceIndex"]): nic.get("DeleteOnTermination") for nic in nic_spec if "DeviceIndex" in nic}
        for index, nic in self.nics.items():
            if nic.id not in given and said.get(index) is None:
                nic.delete_on_termination = True

    Instance.prep_nics = prep_nics_deleted_on_termination


def tags_of(backend, resource_id: str | None) -> list[dict[str, str]]:
    """What `describe_tags(filters={"resource-id": [resource_id]})` answers, from the one entry that can match."""
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    if not resource_id:
        return []
    tags = backend.tags.get(resource_id)
    if not tags:
        return []
    kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
    return [{"resource_id": resource_id, "key": key, "value": value, "resource_type": kind}
            for key, value in list(tags.items())]


def _tags_by_id() -> None:
    """A tagged resource reads its tags by its id instead of through a scan of all tags."""
    from moto.ec2.models.core import TaggedEC2Resource

    def get_tags(self) -> list[dict[str, str]]:
        return tags_of(self.ec2_backend, self.id)

    TaggedEC2Resource.get_tags = get_tags


def _forget_terminated(after: float, clock=time.monotonic) -> None:
    """Instances terminated more than `after` seconds ago leave the EC2 backend (with their tags), checked
    at every EC2 request and whenever a backend lists its reservations. A paginated DescribeInstances
    whose NextToken names a reservation forgotten (or no longer matching the filters) meanwhile goes on
    after it, where moto would fail."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidParameterCombination
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.instances import Instance, InstanceBackend
    from moto.ec2.responses._base_response import EC2BaseResponse
    from moto.ec2.responses.instances import InstanceResponse

    terminate = Instance.terminate
    all_reservations = InstanceBackend.all_reservations
    iter_tagged_resources = EC2Backend.iter_tagged_resources
    ec2_backend = EC2BaseResponse.ec2_backend.fget
    lock = threading.Lock()
    sequence = iter(range(1, sys.maxsize))

    def terminate_and_note_time(self):
        already = self._state.name == "terminated"
        state = terminate(self)
        if not already or getattr(self, "_terminated_at", None) is None:
            self._terminated_at = clock()
        return state

    def forget(backend, instance) -> None:
        for nic in list(instance.nics.values()):
            if nic.instance is instance:
                instance.detach_eni(nic)
        for address in getattr(backend, "addresses", []):
            if address.instance is instance:
                address.instance, address.association_id = None, None
        backend.tags.pop(instance.id, None)

    def prune(backend) -> None:
        now = clock()
        with lock:
            tombstones = backend.__dict__.setdefault("_forgotten_reservations", {})
            for key, (_, at) in list(tombstones.items()):
                if now - at > TOMBSTONE_SECONDS:
                    del tombstones[key]
            for key, reservation in list(backend.reservations.items()):
                if not hasattr(reservation, "_sequence"):
                    reservation._sequence = next(sequence)
                gone = []
                for instance in reservation.instances:
                    if instance._state.name != "terminated":
                        continue
                    if getattr(instance, "_terminated_at", None) is None:
                        instance._terminated_at = now
                    if now - instance._terminated_at >= after:
                        gone.append(instance)
                if not gone:
                    continue
                for instance in gone:
                    forget(backend, instance)
                kept = [i for i in reservation.instances if all(i is not g for g in gone)]
                if kept:
                    reservation.instances = kept
                else:
                    backend.reservations.pop(key, None)
                    tombstones[key] = (reservation._sequence, now)

    def pruned_reservations(self, filters=None):
        prune(self)
        return all_reservations(self, filters)

    def pruned_tagged_resources(self):
        prune(self)
        return iter_tagged_resources(self)

    def pruned_backend(self):
        backend = ec2_backend(self)
        prune(backend)
        return backend

    def describe_instances(self) -> ActionResult:
        """moto's DescribeInstances, but a NextToken naming a reservation left out of this answer goes on after it."""
        self.error_on_dryrun()
        if "InstanceId.1" in self.data and "MaxResults" in self.data:
            raise InvalidParameterCombination(
                "The parameter instancesSet cannot be used with the parameter maxResults")
        filter_dict = self._filters_from_querystring()
        instance_ids = self._get_param("InstanceIds", [])
        token = self._get_param("NextToken")
        if instance_ids:
            reservations = self.ec2_backend.get_reservations_by_instance_ids(instance_ids, filters=filter_dict)
        else:
            reservations = self.ec2_backend.describe_instances(filters=filter_dict)
        reservation_ids = [reservation.id for reservation in reservations]
        start = 0
        if token in reservation_ids:
            start = reservation_ids.index(token) + 1
        elif token:
            backend = self.ec2_backend
            known = backend.reservations.get(token)
            tombstone = backend.__dict__.get("_forgotten_reservations", {}).get(token)
            last = getattr(known, "_sequence", None) if known is not None else tombstone and tombstone[0]
            if last is None:
                raise ValueError(f"{token} is not a NextToken of DescribeInstances")
            start = next((i for i, r in enumerate(reservations) if getattr(r, "_sequence", 0) > last),
                         len(reservations))
        max_results = int(self._get_param("MaxResults", 100))
        page = reservations[start : start + max_results]
        next_token = page[-1].id if max_results and len(reservations) > start + max_results else None
        return ActionResult({"Reservations": page, "NextToken": next_token})

    Instance.terminate = terminate_and_note_time
    InstanceBackend.all_reservations = pruned_reservations
    EC2Backend.iter_tagged_resources = pruned_tagged_resources
    EC2BaseResponse.ec2_backend = property(pruned_backend)
    InstanceResponse.describe_instances = describe_instances


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The wrapper's own options; the rest goes to moto_server."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.moto_console", allow_abbrev=False)
    parser.add_argument("--console-dir", type=Path, required=True,
                        help="directory of the console output files the sandbox's cloud-init writes")
    parser.add_argument("--forget-terminated-after", type=float, default=FORGET_TERMINATED_AFTER,
                        metavar="SECONDS", help="forget an instance this long after it terminated (EC2: about 3600)")
    return parser.parse_known_args(argv)


def main(argv: list[str]) -> None:
    options, rest = parse_args(argv)
    _install_console_output(options.console_dir)
    _release_ips_on_terminate()
    _launch_interfaces_delete_on_termination()
    _forget_terminated(options.forget_terminated_after)
    _tags_by_id()
    from moto.server import main as moto_main

    moto_main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
