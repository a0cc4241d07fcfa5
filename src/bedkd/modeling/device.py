"""Which device models run on: ``$BEDKD_DEVICE`` if set (``cpu``, ``cuda``, ``cuda:1``...), else
CUDA when available, else the CPU."""
from __future__ import annotations

import os

import torch

from ..errors import ConfigError

DEVICE_ENV = "BEDKD_DEVICE"


def default_device() -> torch.device:
    name = os.environ.get(DEVICE_ENV, "").strip()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{DEVICE_ENV}={name!r} is not a torch device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{DEVICE_ENV}={name!r} but this torch build sees no CUDA device")
    return device
