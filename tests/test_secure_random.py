"""Secure DP randomness: the right distributions, and nothing that the run's seed determines."""
import pytest
import torch

from ppsdg import parser, privacy
from ppsdg.secure_random import SecurePoissonSampler, SecureRandom


def test_secure_gaussian_has_the_asked_spread_and_never_repeats():
    like = torch.zeros(0, dtype=torch.float32)
    first = SecureRandom().normal((200_000,), 3.0, like)
    second = SecureRandom().normal((200_000,), 3.0, like)
    assert first.dtype == torch.float32
    assert abs(float(first.mean())) < 0.03 and float(first.std()) == pytest.approx(3.0, rel=0.01)
    assert not torch.equal(first, second)


def test_secure_poisson_batches_keep_each_index_at_the_sample_rate():
    sampler = SecurePoissonSampler(10_000, 0.05, 40, SecureRandom())
    sizes = [len(batch) for batch in sampler]
    assert len(sizes) == len(sampler) == 40
    assert sum(sizes) / len(sizes) == pytest.approx(500, rel=0.05)
    assert all(0 <= i < 10_000 for batch in sampler for i in batch)


def private_round(secure: bool, seed: int = 3) -> tuple[dict, float]:
    """One DP-SGD epoch of a tiny model on fixed data, seeded; the update and the noise's spread."""
    config = parser.from_mapping({"num_nodes": 2, "local_dp": True, "noise_multiplier": 2.0, "max_grad_norm": 0.5,
                                  "batch_size": 16, "secure_noise": secure})
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.LogSoftmax(dim=1))
    dp = privacy.LocalDP(config.privacy, config.run.num_rounds, config.job)
    private = dp.wrap(model, torch.optim.SGD(model.parameters(), lr=1.0), torch.randn(64, 4),
                      torch.randint(0, 3, (64,)))
    for images, labels in private.loader:
        private.optimizer.zero_grad()
        private.criterion(private.model(images), labels).backward()
        private.optimizer.step()
    return {name: t.detach().clone() for name, t in model.state_dict().items()}, dp.spent(private)


def test_secure_dp_sgd_is_not_the_seeds_and_spends_the_same():
    seeded = [private_round(False) for _ in range(2)]
    secure = [private_round(True) for _ in range(2)]
    assert all(torch.equal(seeded[0][0][n], seeded[1][0][n]) for n in seeded[0][0])
    assert not all(torch.equal(secure[0][0][n], secure[1][0][n]) for n in secure[0][0])
    assert secure[0][1] == secure[1][1] == seeded[0][1]


def test_secure_noise_on_the_optimizer_has_opacus_spread():
    """add_secure_noise adds N(0, (noise multiplier x clipping norm)^2) to the summed gradient."""
    class Clipped:
        noise_multiplier, max_grad_norm = 2.0, 0.5

        def __init__(self) -> None:
            self.params = [torch.nn.Parameter(torch.zeros(100_000))]
            self.params[0].summed_grad = torch.full((100_000,), 7.0)

    optimizer = Clipped()
    privacy.add_secure_noise(optimizer, SecureRandom())
    grad = optimizer.params[0].grad
    assert float(grad.mean()) == pytest.approx(7.0, abs=0.02)
    assert float(grad.std()) == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("secure", [False, True])
def test_the_moments_release_is_noised_from_the_secure_stream(secure):
    from ppsdg import data
    from ppsdg.synthesizers import moments

    chosen = parser.from_mapping({"gan": True, "data": "embedded", "local_dp": True, "noise_multiplier": 1.0,
                                  "secure_noise": secure})
    rounds = chosen.run.num_rounds
    synthesizer = moments.MomentsSynthesizer(chosen.job, rounds, privacy.LocalDP(chosen.privacy, rounds),
                                             chosen.source.data)
    inputs, labels = data.to_tensors(data.load("embedded")[0])

    def released() -> torch.Tensor:
        torch.manual_seed(5)
        update, _, _, _ = synthesizer.local_update(synthesizer.new_model(), inputs, labels,
                                                   privacy.LocalDP(chosen.privacy, rounds), None, 0.0, None)
        return update["second"]

    first, second = released(), released()
    assert torch.equal(first, second) != secure
