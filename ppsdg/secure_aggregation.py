"""Secure aggregation of a round's statistics releases: the server learns the sum of the members'
releases and nothing of any one, and the sum carries the noise of one central release.

Once a run, each worker makes an ephemeral X25519 key pair and publishes its public key (the key
agreement: one extra exchange, a message of round 0). Each round's message then holds the public keys
of that attempt's members. A member releases its exact counts in fixed point (SCALE units a count)
plus its share of the noise, discrete Gaussian, masked with one pairwise mask per other member
(`secure_sum`); its row count, declared noise and DP spending travel in the clear. The server adds the
masked releases modulo 2^64: the masks cancel, and what remains is the members' counts plus the sum
of their noise shares, a discrete Gaussian of the planned variance up to a divergence far below the
accountant's precision (Kairouz, Liu and Steinke, ICML 2021).

A member's share is 1 / (members - colluders) of the variance, the colluders the run's (--colluders)
or its node owner's if more (PPSDG_DISTRIBUTED_NOISE); a vantage6 node whose owner allows no share adds
all of it. A member missing from an attempt leaves its masks in the others' releases: the attempt is
discarded (what it released is charged) and the round runs again without it, under a new context, so
that no mask serves twice.
"""
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from backends import Tensors
from ppsdg import secure_sum
from ppsdg.errors import FederationError
from ppsdg.files import write_atomically
from ppsdg.synthesizers.base import ExactRelease

ROUND = "round"
ATTEMPT = "secure.attempt"
KEYS = "secure.keys"
PUBLIC_KEY = "secure.public_key"
# The figures a member's reply carries beside its DP spending: its share of the noise variance and
# the scale the server multiplies the sum by.
SHARE = "noise_share"
SCALE_FIGURE = "release_scale"
FIGURES = (SHARE, SCALE_FIGURE)
KEY_BYTES = 32
# Fixed point: counts times 2^16. A share's noise is then thousands of units wide or more, where a sum
# of discrete Gaussians is one discrete Gaussian within a divergence of exp(-10^6).
SCALE = float(1 << 16)
KEY_FILE = "secure-aggregation.json"
END = -1


def key_request() -> Tensors:
    """The key agreement's message: round 0, nothing else."""
    return {ROUND: torch.tensor(0, dtype=torch.int64)}


def key_template() -> Tensors:
    return {PUBLIC_KEY: torch.zeros(KEY_BYTES, dtype=torch.uint8)}


def round_message(state: Tensors, round_: int, attempt: int, keys: Mapping[int, bytes], members: Sequence[int],
                  workers: int) -> Tensors:
    """A round's message: the global state, the attempt, and the public key of each member (rank r in row
    r - 1; zeros for the workers that are not members of this attempt)."""
    rows = torch.zeros((workers, KEY_BYTES), dtype=torch.uint8)
    for rank in members:
        rows[rank - 1] = torch.frombuffer(bytearray(keys[rank]), dtype=torch.uint8)
    return {ROUND: torch.tensor(round_, dtype=torch.int64), ATTEMPT: torch.tensor(attempt, dtype=torch.int64),
            KEYS: rows, **state}


def reply_template(template: Tensors, secret: Sequence[str]) -> Tensors:
    """A member's reply: the round's usual reply, its secret parts as masked 64-bit words."""
    return {name: torch.zeros_like(t, dtype=torch.int64) if name in secret else t for name, t in template.items()}


def context(round_: int, attempt: int) -> str:
    """What binds a round's masks: the round and the attempt (the key pairs are the run's, fresh each run)."""
    return f"ppsdg round {round_} attempt {attempt}"


@dataclass
class NodeSecrets:
    """A worker's half of the key agreement: its private key, its public key, and the contexts its masks
    have served, each at most once. On vantage6 they live in the job's temporary folder on the node,
    between the subtasks of one run; a gloo worker keeps them in memory."""

    private: X25519PrivateKey
    public: bytes
    used: list[str] = field(default_factory=list)
    path: Path | None = None

    @classmethod
    def fresh(cls, folder: str | None = None) -> "NodeSecrets":
        private, public = secure_sum.key_pair()
        secrets = cls(private, public, [], Path(folder) / KEY_FILE if folder else None)
        secrets.save()
        return secrets

    @classmethod
    def load(cls, folder: str) -> "NodeSecrets":
        path = Path(folder) / KEY_FILE
        try:
            stored = json.loads(path.read_text())
            private = X25519PrivateKey.from_private_bytes(bytes.fromhex(stored["private"]))
            return cls(private, bytes.fromhex(stored["public"]), list(stored["used"]), path)
        except FileNotFoundError:
            raise FederationError("secure aggregation: this node took no part in the run's key agreement (no key "
                                  "in its job folder)") from None
        except (ValueError, KeyError, TypeError) as error:
            raise FederationError(f"secure aggregation: this node's stored key cannot be read ({error})") from None

    def save(self) -> None:
        if self.path is None:
            return
        raw = self.private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                         serialization.NoEncryption())
        write_atomically(self.path, json.dumps({"private": raw.hex(), "public": self.public.hex(),
                                                "used": self.used}).encode())

    def reply(self) -> Tensors:
        return {PUBLIC_KEY: torch.frombuffer(bytearray(self.public), dtype=torch.uint8)}

    def peers(self, keys: torch.Tensor, rank: int) -> dict[int, bytes]:
        """The attempt's members and their public keys (a round message's KEYS), refused unless they hold
        this node's own key at its rank, distinct keys, and at least one other member (alone, its release
        would be its own)."""
        rows = keys.numpy()
        peers = {index + 1: row.tobytes() for index, row in enumerate(rows) if row.any()}
        if peers.get(rank) != self.public:
            raise FederationError("secure aggregation: the round's keys do not hold this node's own key at its rank")
        if len(set(peers.values())) != len(peers):
            raise FederationError("secure aggregation: the round's keys repeat a key")
        if len(peers) < 2:
            raise FederationError("secure aggregation: the round has no other member, so this node's release "
                                  "would reach the server unmasked")
        return peers

    def use(self, mask_context: str) -> None:
        """Spend a context: a mask that served twice would give the server the difference of two releases."""
        if mask_context in self.used:
            raise FederationError(f"secure aggregation: this node has already masked a release for "
                                  f"{mask_context}: a mask serves once")
        self.used.append(mask_context)
        self.save()


def share_of(members: int, colluders: int | None) -> float:
    """A member's share of the noise variance: 1 / (members - colluders); all of it where no share is
    allowed (None) or fewer than two honest members would remain."""
    if colluders is None or members - colluders < 2:
        return 1.0
    return 1.0 / (members - colluders)


def masked_reply(exact: ExactRelease, noise: np.ndarray, rank: int, secrets: NodeSecrets,
                 peers: Mapping[int, bytes], mask_context: str) -> Tensors:
    """A member's reply: each secret part's fixed-point counts plus its noise share, masked; the rest in
    the clear. `noise` is the discrete Gaussian draw for the parts in order, in fixed-point units."""
    start, reply = 0, dict(exact.public)
    for name, counts in exact.counts.items():
        scaled = counts.numpy() * SCALE
        if not np.array_equal(scaled, np.rint(scaled)):
            raise FederationError(f"secure aggregation sums whole numbers: the release's {name} is not")
        values = scaled.astype(np.int64) + noise[start:start + scaled.size].reshape(scaled.shape)
        start += scaled.size
        words = secure_sum.masked(secure_sum.to_ring(values), rank, secrets.private, peers, mask_context.encode())
        reply[name] = torch.from_numpy(words.view(np.int64).copy())
    return reply


def noise_sigma(exact: ExactRelease, share: float) -> np.ndarray:
    """The standard deviation of each secret entry's noise share, in fixed-point units, parts in order."""
    return np.concatenate([exact.std[name].numpy().ravel() for name in exact.counts]) * SCALE * math.sqrt(share)


def summed(updates: Sequence[Tensors], secret: Sequence[str], scale: float) -> Tensors:
    """The members' replies added: the secret parts modulo 2^64, where the masks cancel, back to numbers
    and multiplied by `scale`; the public parts as they are."""
    total = {}
    for name in updates[0]:
        if name in secret:
            words = secure_sum.ring_sum([update[name].numpy().view(np.uint64) for update in updates])
            total[name] = torch.from_numpy(secure_sum.from_ring(words, SCALE) * scale)
        else:
            total[name] = sum(update[name] for update in updates)
    return total


def check_figures(figures: Mapping[str, float], members: int, colluders: int) -> None:
    """A member's declared share: at least the run's plan (1 / (members - colluders)), at most all of it;
    a smaller one would leave the sum with less noise than the guarantee counts."""
    share = figures.get(SHARE, math.nan)
    least = share_of(members, colluders)
    if not (math.isfinite(share) and least * (1 - 1e-9) <= share <= 1.0):
        raise FederationError(f"update rejected: its noise share {share!r} is not in [{least:.4g}, 1], what the "
                              f"run's plan allows {members} members with {colluders} colluder(s)")
