"""The sandbox's moto server, whose EC2 console output is what the sandbox's cloud-init printed.

The sandbox runs moto with two changes:
- GetConsoleOutput: moto answers with a fixed sample text; here the output of an instance is the
  file `<console_dir>/<instance_id>` when the sandbox's cloud-init wrote one (with the node's
  `BEGIN SSH HOST KEY KEYS` block), so the flows read host keys from the console output exactly as
  they do on AWS;
- TerminateInstances frees the instance's private IPs in its subnet, as EC2 does (moto frees them
  only when the Python object is garbage-collected), so a rebuild can launch at the same IPs.

Started by `sandbox.moto.start_moto_server(..., console_dir=DIR)`.
"""

from __future__ import annotations

import sys
from pathlib import Path


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
        state = terminate(self)
        try:
            subnet = self.ec2_backend.get_subnet(self.subnet_id)
        except Exception:  # no subnet (EC2-Classic style launch): nothing to free
            return state
        for ip in list(self._private_ips):
            if subnet._subnet_ips.get(ip) is self:
                subnet.del_subnet_ip(ip)
        return state

    Instance.terminate = terminate_and_release


def main(argv: list[str]) -> None:
    console_dir = Path(argv[argv.index("--console-dir") + 1])
    rest = [a for i, a in enumerate(argv) if a != "--console-dir" and argv[i - 1 : i] != ["--console-dir"]]
    _install_console_output(console_dir)
    _release_ips_on_terminate()
    from moto.server import main as moto_main

    moto_main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
