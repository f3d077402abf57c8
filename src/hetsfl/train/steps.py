"""The steps every method is made of: one SGD iteration of the whole model or of a split model (client and
server), evaluation, copying a global state into a model, and a round's result. See
:mod:`hetsfl.train.methods` for how the methods combine them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hetsfl.blocks import make_sgd, whole_step  # the blocks the runtime runs and the profile times

__all__ = ["RoundResult", "copy_state", "evaluate", "make_sgd", "split_step", "whole_step"]


class RoundResult:
    """Sum of the round's batch losses (a tensor, no sync), number of batches and samples."""

    __slots__ = ("loss_sum", "num_batches", "num_samples")

    def __init__(self, loss_sum: torch.Tensor, num_batches: int, num_samples: int):
        self.loss_sum = loss_sum
        self.num_batches = num_batches
        self.num_samples = num_samples

    @property
    def mean_loss(self) -> float:
        return float(self.loss_sum.item()) / max(self.num_batches, 1)


def split_step(
    client: nn.Module,
    server: nn.Module,
    opt_client: torch.optim.Optimizer | None,
    opt_server: torch.optim.Optimizer | None,
    x: torch.Tensor,
    y: torch.Tensor,
) -> torch.Tensor:
    """One split iteration (client forward, server forward/backward/step, client backward/step)."""
    if opt_client is not None:
        opt_client.zero_grad(set_to_none=True)
    if opt_server is not None:
        opt_server.zero_grad(set_to_none=True)
    out = client(x)
    smashed = out.detach()
    if out.requires_grad:
        smashed.requires_grad_()
    loss = F.cross_entropy(server(smashed), y)
    loss.backward()
    if opt_server is not None:
        opt_server.step()
        opt_server.zero_grad(set_to_none=True)  # free the gradients now: SFL-V2 keeps N client models
    if out.requires_grad:
        out.backward(smashed.grad)
    if opt_client is not None:
        opt_client.step()
        opt_client.zero_grad(set_to_none=True)
    return loss.detach()


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` in eval mode on (x, y); restores the training flag."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters())).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = int(y.shape[0])
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size].to(device, non_blocking=True)
        yb = y[start : start + batch_size].to(device, non_blocking=True)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").to(torch.float64)
        correct += (logits.argmax(dim=1) == yb).sum()
    model.train(was_training)
    return int(correct.item()) / n, float(loss_sum.item()) / n


def copy_state(dst: nn.Module, src: dict[str, torch.Tensor], prefix: str = "units.") -> None:
    """Copy the global state `src` (keys ``units.…``) into `dst` in place; `dst`'s keys carry `prefix`."""
    with torch.no_grad():
        for key, tensor in dst.state_dict().items():
            tensor.copy_(src["units." + key[len(prefix) :]])
