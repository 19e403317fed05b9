"""WGAN-GP: per-sample gradients with the penalty, and the synthetic data a run writes."""
import json

import torch

from conftest import run_main
from ppsdg import data, output
from ppsdg.synthesizers import wgan
from ppsdg.simplemodel import GAN


def loop_gradients(critic, real, fake, labels, mix, weight):
    """Per-example gradients the slow, obvious way: autograd one example at a time."""
    grads = []
    for i in range(len(labels)):
        y = labels[i:i + 1]
        mixed = (mix[i] * real[i:i + 1] + (1 - mix[i]) * fake[i:i + 1]).requires_grad_(True)
        (input_grad,) = torch.autograd.grad(critic(mixed, y)[0].sum(), mixed, create_graph=True)
        penalty = (torch.sqrt((input_grad ** 2).sum() + 1e-12) - 1) ** 2
        real_score, real_logits = critic(real[i:i + 1], y)
        loss = (critic(fake[i:i + 1], y)[0].sum() - real_score.sum() + weight * penalty
                + torch.nn.functional.cross_entropy(real_logits, y))
        grads.append(dict(zip([n for n, _ in critic.named_parameters()],
                              torch.autograd.grad(loss, list(critic.parameters())))))
    return grads


def critic_and_batch(seed: int, size: int):
    """A float64 critic and a seeded batch of real and fake images, labels and penalty mixes."""
    torch.manual_seed(seed)
    critic = GAN().critic.double()
    real, fake = (torch.randn(size, 1, 28, 28, dtype=torch.float64) for _ in range(2))
    return critic, real, fake, torch.randint(0, 10, (size,)), torch.rand(size, 1, 1, 1, dtype=torch.float64)


def test_vmap_per_sample_gradients_equal_a_per_example_loop():
    critic, real, fake, labels, mix = critic_and_batch(0, 6)
    fast, losses = wgan.per_sample_gradients(critic, real, fake, labels, mix, 10.0)
    slow = loop_gradients(critic, real, fake, labels, mix, 10.0)
    for i, expected in enumerate(slow):
        for name, grad in expected.items():
            assert torch.allclose(fast[name][i], grad, atol=1e-5, rtol=1e-5), (i, name)
    assert losses.shape == (6,)
    assert any(fast[name].abs().sum() > 0 for name in fast)


def test_the_batch_loss_without_dp_has_the_mean_per_sample_gradient():
    critic, real, fake, labels, mix = critic_and_batch(1, 5)
    per_sample, losses = wgan.per_sample_gradients(critic, real, fake, labels, mix, 10.0)
    batch = wgan.critic_losses(critic, real, fake, labels, mix, 10.0)
    assert torch.allclose(batch, losses)
    batch.mean().backward()
    for name, p in critic.named_parameters():
        assert torch.allclose(p.grad, per_sample[name].mean(0), atol=1e-10), name


def test_gan_run_with_dp_writes_synthetic_data_and_equals_across_backends(small_csv, tmp_path):
    argv = ["--data", str(small_csv), "--gan", "--synthesizer", "wgan", "-ldp", "-bs", "32", "-e", "1", "-nr", "2",
            "--sample-every", "1",
            "--synthetic-samples", "60", "--tstr-epochs", "1"]
    gloo_state, gloo_records = run_main(tmp_path / "gloo", "--backend", "gloo", *argv)
    mock_state, mock_records = run_main(tmp_path / "mock", "--backend", "vantage6", *argv)
    assert all(torch.equal(gloo_state[name], mock_state[name]) for name in gloo_state)
    assert [r["epsilon"] for r in gloo_records] == [r["epsilon"] for r in mock_records]
    for directory in (tmp_path / "gloo", tmp_path / "mock"):
        synthetic = data.load_csv(directory / output.SYNTHETIC)
        assert len(synthetic) == 60 and sorted(set(synthetic.labels.tolist())) == list(range(10))
        for name in (output.SAMPLES, "samples_round0001.png", "samples_round0002.png"):
            assert (directory / name).read_bytes()[:4] == b"\x89PNG"
        generator = torch.load(directory / output.GENERATOR, weights_only=True)
        assert generator.keys() == GAN().generator.state_dict().keys()
        summary = json.loads((directory / output.SUMMARY).read_text())
        assert 0 <= summary["tstr_accuracy"] <= 1 and summary["epsilon"] > 0
    assert (tmp_path / "gloo" / output.SYNTHETIC).read_text() == (tmp_path / "mock" / output.SYNTHETIC).read_text()
    gloo_summary, mock_summary = (json.loads((tmp_path / side / output.SUMMARY).read_text()) for side in ("gloo", "mock"))
    assert gloo_summary["evaluation"] == mock_summary["evaluation"]
    assert 0 <= gloo_summary["memorized_share"] <= 1 and gloo_summary["frechet_distance"] > 0
    assert all(w["critic_loss"] is None and w["train_loss"] is None and w["generator_loss"] != 0
               for r in gloo_records for w in r["workers"])
