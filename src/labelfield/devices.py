"""The `--device` option of every command: auto, cpu, cuda or cuda:N -> a torch.device."""

from __future__ import annotations

import torch

from labelfield.errors import LabelfieldError


def resolve_device(name: str | torch.device) -> torch.device:
    """ "auto" -> cuda when available, else cpu; "cpu"; "cuda" / "cuda:N" (an error without CUDA)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise LabelfieldError(f"unknown device {name!r} (auto, cpu, cuda or cuda:N)")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LabelfieldError(f"--device {name} was asked for, but this PyTorch sees no CUDA device")
    return torch.device(name)
