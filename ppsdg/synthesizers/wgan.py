"""WGAN-GP: a class-conditional generator and critic trained by FedAvg, with or without DP on the
critic (the only part that sees real data).

Opacus's per-sample gradient hooks cannot differentiate the gradient penalty (a double backward),
so the critic's per-sample gradients, penalty included, come from torch.func (vmap over grad) and
are handed to Opacus's DP optimizer, which clips, adds noise and accounts.
"""
import copy
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from backends import Tensors
from ppsdg import data
from ppsdg.config import Wgan
from ppsdg.privacy import LocalDP
from ppsdg.simplemodel import GAN, Generator
from ppsdg.synthesizers.base import Batch, Synthesizer, Update


def critic_sample_loss(critic: nn.Module, params: Mapping[str, torch.Tensor], real: torch.Tensor,
                       fake: torch.Tensor, label: torch.Tensor, mix: torch.Tensor,
                       penalty_weight: float) -> torch.Tensor:
    """One example's critic loss: D(fake) - D(real) + weight * (|grad_x D(x_mix)| - 1)^2, plus the
    auxiliary classifier's cross-entropy on the real example (AC-WGAN-GP)."""

    def outputs(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score, logits = functional_call(critic, params, (image.unsqueeze(0), label.unsqueeze(0)))
        return score.squeeze(0), logits

    def score(image: torch.Tensor) -> torch.Tensor:
        return outputs(image)[0]

    mixed = mix * real + (1 - mix) * fake
    input_gradient, _ = grad_and_value(score)(mixed)
    norm = torch.sqrt((input_gradient ** 2).sum() + 1e-12)
    real_score, real_logits = outputs(real)
    classification = F.cross_entropy(real_logits, label.unsqueeze(0))
    return score(fake) - real_score + penalty_weight * (norm - 1) ** 2 + classification


def per_sample_gradients(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor,
                         mix: torch.Tensor, penalty_weight: float
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each example's gradient of its own critic loss, and the losses, in one vectorized pass."""
    params = {name: p.detach() for name, p in critic.named_parameters()}

    def loss(p: Mapping[str, torch.Tensor], r: torch.Tensor, f: torch.Tensor, y: torch.Tensor,
             m: torch.Tensor) -> torch.Tensor:
        return critic_sample_loss(critic, p, r, f, y, m, penalty_weight)

    return vmap(grad_and_value(loss), in_dims=(None, 0, 0, 0, 0))(params, real, fake, labels, mix)


def critic_losses(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor,
                  mix: torch.Tensor, penalty_weight: float) -> torch.Tensor:
    """Each example's critic loss in one vectorized pass, differentiable in the critic's parameters:
    without DP their mean is the batch loss (the same function as the per-sample gradients', and as fast
    as the plain double backward)."""
    params = dict(critic.named_parameters())

    def loss(r: torch.Tensor, f: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return critic_sample_loss(critic, params, r, f, y, m, penalty_weight)

    return vmap(loss)(real, fake, labels, mix)


def critic_step(gan: GAN, optimizer: torch.optim.Optimizer, real: torch.Tensor, labels: torch.Tensor,
                penalty_weight: float, private: bool) -> float:
    """One critic update on a batch of real examples; a private optimizer clips and noises each
    example's gradient, which only then needs computing apart."""
    with torch.no_grad():
        fake = gan.generator(torch.randn(len(labels), gan.generator.latent_dim, device=labels.device), labels)
    mix = torch.rand(len(labels), 1, 1, 1, device=labels.device)
    optimizer.zero_grad(set_to_none=True)
    if not private:
        losses = critic_losses(gan.critic, real, fake, labels, mix, penalty_weight)
        losses.mean().backward()
    elif len(labels):
        grads, losses = per_sample_gradients(gan.critic, real, fake, labels, mix, penalty_weight)
        for name, p in gan.critic.named_parameters():
            p.grad_sample = grads[name]
    else:
        losses = torch.zeros(1)
        for p in gan.critic.parameters():
            p.grad_sample = p.new_zeros((0, *p.shape))
    optimizer.step()
    return losses.mean().item()


def generator_step(gan: GAN, optimizer: torch.optim.Optimizer, batch_size: int) -> float:
    """One generator update against the critic, on labels drawn uniformly: no real data involved. Its
    loss adds the auxiliary classifier's cross-entropy: fakes should be classified as their label."""
    device = next(gan.generator.parameters()).device
    labels = torch.randint(0, 10, (batch_size,), device=device)
    fake = gan.generator(torch.randn(batch_size, gan.generator.latent_dim, device=device), labels)
    score, logits = gan.critic(fake, labels)
    loss = -score.mean() + F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def adam(module: nn.Module, lr: float) -> torch.optim.Optimizer:
    """WGAN-GP's optimizer settings (Gulrajani et al. 2017)."""
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(0.0, 0.9))


def local_update(model: GAN, images: torch.Tensor, labels: torch.Tensor, settings: Wgan,
                 dp: LocalDP | None, epoch_batches: Callable[[], Iterable[Batch]], lr: float, progress=None
                 ) -> Update:
    """A worker's round of WGAN-GP on a copy of the global GAN: critic steps on real batches, a
    generator step every --critic-steps of them (at least one a round, however little data a worker
    holds). With DP, Opacus's Poisson sampler draws the batches."""
    gan = copy.deepcopy(model)
    critic_optimizer, generator_optimizer = adam(gan.critic, lr), adam(gan.generator, lr)
    private = None
    if dp is not None:
        private = dp.wrap(gan.critic, critic_optimizer, images, labels, per_sample_gradients=False)
        critic_optimizer = private.optimizer
    critic_total, critic_count, critic_steps, generator_losses = 0.0, 0, 0, []
    for _ in range(settings.epochs):
        for real, real_labels in (private.loader if private is not None else epoch_batches()):
            critic_total += critic_step(gan, critic_optimizer, real, real_labels, settings.gradient_penalty,
                                        private is not None) * len(real_labels)
            critic_count += len(real_labels)
            critic_steps += 1
            if critic_steps % settings.critic_steps == 0:
                generator_losses.append(generator_step(gan, generator_optimizer, settings.batch_size))
            if progress is not None:
                progress.update(1)
    if not generator_losses:
        generator_losses.append(generator_step(gan, generator_optimizer, settings.batch_size))
    critic_loss = critic_total / max(critic_count, 1)
    extra = {"critic_loss": critic_loss, "generator_loss": sum(generator_losses) / len(generator_losses)}
    if private is not None:
        extra.update(LocalDP.spent(private))
    return dict(gan.state_dict()), len(labels), critic_loss, extra


class WGAN(Synthesizer):
    """The federated WGAN-GP: FedAvg averages the generator and the critic together."""

    name = "wgan"
    figures = ("critic_loss", "generator_loss")

    def __init__(self, settings: Wgan) -> None:
        self.training = self.settings = settings

    def new_model(self) -> nn.Module:
        return GAN()

    def local_update(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, dp: LocalDP | None,
                     epoch_batches: Callable[[], Iterable[Batch]], lr: float, progress=None) -> Update:
        return local_update(model, images, labels, self.settings, dp, epoch_batches, lr, progress)

    def generator_state(self, model: nn.Module) -> Tensors:
        return {name: t.detach().cpu().clone() for name, t in model.generator.state_dict().items()}

    @torch.no_grad()
    def sample(self, state: Tensors, count: int, seed: int) -> data.ImageSet:
        """Images from the generator for labels 0, 1, ..., 9, 0, ... and seeded latent noise."""
        generator = Generator()
        generator.load_state_dict(state)
        generator.eval()
        noise_source = torch.Generator().manual_seed(seed)
        labels = torch.arange(count) % data.NUM_CLASSES
        noise = torch.randn(count, generator.latent_dim, generator=noise_source)
        return data.from_tensors(generator(noise, labels), labels)
