"""The networks that are trained federatedly: the original MNIST classifier and a conditional WGAN-GP."""
import torch
import torch.nn.functional as F
from torch import nn

from ppsdg.data import MEAN, NUM_CLASSES, STD


class Net(nn.Module):
    """The original classifier (PyTorch's MNIST example): 1,199,882 parameters, log-probabilities out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


LATENT_DIM = 64


class Generator(nn.Module):
    """Class-conditional generator: noise and a label in, a 28x28 image in the classifier's input scale."""

    def __init__(self, latent_dim: int = LATENT_DIM) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.embed = nn.Embedding(NUM_CLASSES, 16)
        self.project = nn.Linear(latent_dim + 16, 128 * 7 * 7)
        self.up1 = nn.ConvTranspose2d(128, 64, 4, 2, 1)
        self.up2 = nn.ConvTranspose2d(64, 1, 4, 2, 1)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.project(torch.cat([noise, self.embed(labels)], dim=1))).view(-1, 128, 7, 7)
        x = torch.tanh(self.up2(F.relu(self.up1(x))))
        return ((x + 1) / 2 - MEAN) / STD


class Critic(nn.Module):
    """Class-conditional WGAN critic with an auxiliary classifier (AC-WGAN-GP, as Gulrajani et al.
    condition theirs): a score, whose label term is a projection (Miyato and Koyama 2018), and class
    logits, which teach the generator its labels far sooner than the score alone. No batch statistics,
    so per-sample gradients are well defined."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 4, 2, 1)
        self.conv2 = nn.Conv2d(32, 64, 4, 2, 1)
        self.score = nn.Linear(64 * 7 * 7, 1)
        self.embed = nn.Embedding(NUM_CLASSES, 64 * 7 * 7)
        self.classify = nn.Linear(64 * 7 * 7, NUM_CLASSES)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The score of each image as one of its label, and its class logits."""
        x = F.leaky_relu(self.conv1(images), 0.2)
        features = torch.flatten(F.leaky_relu(self.conv2(x), 0.2), 1)
        score = self.score(features).squeeze(1) + (self.embed(labels) * features).sum(1)
        return score, self.classify(features)


class GAN(nn.Module):
    """Generator and critic in one module, so FedAvg averages both through one state_dict."""

    def __init__(self) -> None:
        super().__init__()
        self.generator = Generator()
        self.critic = Critic()

