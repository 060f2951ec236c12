"""Deploy an artifact as a self-contained C99 library for a Cortex-M4 (python -m search.deploy).

Public API:
- `deploy(artifact, out, force=False, data_dir=None) -> Deployment`: write the library;
- `measure(artifact) -> FlashReport`: its flash and RAM on a Cortex-M4, from a real link;
- `predict_flash(cfg) -> FlashReport`: the same breakdown from a configuration, before training;
- `check_host` / `check_device`: agreement with the numpy reference, and of QEMU with the host.
Errors are `DeployError` with a one-line message. See docs/deploy.md.
"""

from fsdd.errors import DeployError
from search.deploy.build import Deployment, deploy
from search.deploy.check import DeviceAgreement, HostAgreement, check_device, check_host
from search.deploy.measure import FlashReport, measure
from search.deploy.predict import predict_flash

__all__ = [
    "DeployError",
    "Deployment",
    "DeviceAgreement",
    "FlashReport",
    "HostAgreement",
    "check_device",
    "check_host",
    "deploy",
    "measure",
    "predict_flash",
]
