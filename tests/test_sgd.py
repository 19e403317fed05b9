"""The worker's LocalSGD: the same parameters as torch.optim.SGD, under DP too, without torch._dynamo."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from ppsdg import local, parser
from ppsdg.privacy import LocalDP
from ppsdg.sgd import LocalSGD


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3), nn.LogSoftmax(dim=1))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(40, 6, generator=generator), torch.randint(0, 3, (40,), generator=generator)


def test_local_sgd_steps_are_torch_sgd_steps_bit_for_bit():
    images, labels = data()
    ours, theirs = model(), model()
    optimizers = LocalSGD(ours, 0.1, 0.5), torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.5)
    for start in range(0, 40, 8):
        for net, optimizer in zip((ours, theirs), optimizers):
            local.train_batch(net, optimizer, images[start:start + 8], labels[start:start + 8])
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), theirs.parameters()))
    assert not torch.equal(next(ours.parameters()), next(model().parameters()))


def test_local_sgd_under_opacus_is_torch_sgd_under_opacus():
    images, labels = data()
    config = parser.from_mapping({"local_dp": True, "noise_multiplier": 1.0, "batch_size": 8})
    trained = []
    for make in (lambda net: LocalSGD(net, 0.1, 0.5), lambda net: torch.optim.SGD(net.parameters(), 0.1, 0.5)):
        net = model()
        torch.manual_seed(3)
        private = LocalDP(config.privacy, config.run.num_rounds, config.job).wrap(net, make(net), images, labels)
        local.train_epoch(private.model, private.optimizer, private.loader, criterion=private.criterion)
        trained.append(net)
    assert all(torch.equal(p, q) for p, q in zip(trained[0].parameters(), trained[1].parameters()))


@pytest.mark.parametrize("dp", [{}, {"local_dp": True, "noise_multiplier": 1.0}], ids=["plain", "dp"])
def test_a_node_round_imports_no_torch_dynamo(dp):
    """What a vantage6 container runs each round, in a fresh interpreter: torch._dynamo would add
    seconds to every round."""
    script = ("import sys, torch; from ppsdg import local, parser, models; from ppsdg.job import Job; "
              f"config = parser.from_mapping({{'num_nodes': 2, **{dp!r}}}); "
              "job = Job.of_config(config); "
              "ex = local.Examples(torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))); "
              "local.local_update(models.new_model(job.synthesizer, config.run.seed), ex, job, config.run.seed, 1, 1); "
              "print('torch._dynamo' in sys.modules)")
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert printed.stdout.strip() == "False"
