"""The global model a run trains: the classifier, or with --gan the chosen synthesizer's state."""
import argparse

import torch
from torch import nn

from ppsdg import synthesizers
from ppsdg.simplemodel import Net


def new_model(options: argparse.Namespace, device: torch.device = torch.device("cpu")) -> nn.Module:
    """The initial global model, the same from the same seed on every rank and backend."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(options.seed)
        model = synthesizers.for_options(options).new_model() if options.gan else Net()
        return model.to(device)


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state on the CPU, detached from the model: what a checkpoint keeps."""
    return {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
