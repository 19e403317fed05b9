"""A worker's local SGD: torch.optim.SGD's own update, without the torch.optim.Optimizer class around it.

Optimizer's first use imports torch._dynamo (2.2 s of CPU here, sympy included). A long-lived gloo
worker pays that once, but a vantage6 node starts a fresh container every round, so it was a third
of each container's work. The update itself is torch's functional `sgd`, called with the arguments
torch.optim.SGD.step passes, so the parameters are bit for bit those of torch.optim.SGD; Opacus's
DPOptimizer wraps this class as it wraps any optimizer (it reads `param_groups`, `state` and
`defaults`, and calls `zero_grad` and `step`).
"""
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from torch.optim.sgd import sgd


class LocalSGD:
    """SGD with momentum over one parameter group, its momentum buffers reset with each new instance
    (a worker builds one per round)."""

    def __init__(self, model: nn.Module, lr: float, momentum: float) -> None:
        self.defaults: dict[str, Any] = {"lr": lr, "momentum": momentum, "dampening": 0.0, "weight_decay": 0.0,
                                         "nesterov": False, "maximize": False}
        self.param_groups: list[dict[str, Any]] = [{"params": list(model.parameters()), **self.defaults}]
        self.state: defaultdict[torch.Tensor, dict[str, torch.Tensor]] = defaultdict(dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
                momentum=group["momentum"], lr=group["lr"], dampening=group["dampening"],
                nesterov=group["nesterov"], maximize=group["maximize"])
            if group["momentum"] != 0:
                for param, buffer in zip(params, buffers):
                    self.state[param]["momentum_buffer"] = buffer


Optimizer = torch.optim.Optimizer | LocalSGD
"""What a training loop steps: a worker's LocalSGD, or a torch optimizer (the WGAN's Adam)."""
