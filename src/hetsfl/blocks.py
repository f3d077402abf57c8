"""The compute blocks of one training batch, as the engine and the distributed runtime run them.

One module for the code that trains and the code that is timed: hetsfl.train.steps (the engine) and
hetsfl.runtime (device.py paces ``device_forward`` and ``device_backward``, serving.py runs ``server_step``,
an FL device ``whole_step``) call these functions, and the profile stage times them for the fixed cost per
batch (hetsfl.profiling.step_cost). It imports torch only, so that the profile stage does not depend on the
rest of the engine or the runtime (hetsfl.deps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["device_backward", "device_forward", "has_trainable", "make_sgd", "server_step", "whole_step"]


def has_trainable(module: nn.Module) -> bool:
    """Whether the module has trainable parameters (a device's units 1..s without any get no cut gradient)."""
    return any(p.requires_grad for p in module.parameters())


def make_sgd(module: nn.Module, lr: float, momentum: float, weight_decay: float) -> torch.optim.SGD | None:
    """SGD over the module's trainable parameters, or None if it has none."""
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        return None
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


def whole_step(
    model: nn.Module, opt: torch.optim.Optimizer | None, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """One SGD iteration of the whole model; returns the detached batch loss."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    if opt is not None:
        opt.step()
    return loss.detach()


def device_forward(client: nn.Module, opt: torch.optim.Optimizer | None, x: torch.Tensor) -> torch.Tensor:
    """A device's first block of a split iteration: clear the client's gradients, run units 1..s on the
    batch; the smashed data (with its graph)."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    return client(x)


def device_backward(out: torch.Tensor, grad: torch.Tensor, opt: torch.optim.Optimizer | None) -> None:
    """A device's second block: back-propagate the cut gradient through units 1..s, step, clear the gradients."""
    out.backward(grad)
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)


def server_step(
    server: nn.Module, opt: torch.optim.Optimizer | None, x: torch.Tensor, y: torch.Tensor, needs_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The server's half of the engine's split_step: forward, loss, backward, step; (loss, gradient of x)."""
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    if needs_grad:
        x.requires_grad_()
    loss = F.cross_entropy(server(x), y)
    loss.backward()
    if opt is not None:
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss.detach(), (x.grad if needs_grad else None)
