"""The global model a run trains: the classifier, or a synthesizer's state."""
import torch
from torch import nn

from ppsdg.simplemodel import Net
from ppsdg.synthesizers.base import Synthesizer


def new_model(synthesizer: Synthesizer | None, seed: int, device: torch.device = torch.device("cpu")) -> nn.Module:
    """The initial global model (the classifier where `synthesizer` is None), the same from the same seed
    on every rank and backend."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = synthesizer.new_model() if synthesizer is not None else Net()
        return model.to(device)


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state on the CPU, detached from the model: what a checkpoint keeps."""
    return {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
