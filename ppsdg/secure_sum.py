"""Secure summation by pairwise masks (Bonawitz et al., CCS 2017, without its dropout recovery): the
server learns the sum of the nodes' integer releases and nothing of any one of them.

Each node makes an ephemeral X25519 key pair a round and publishes its public key (through the
server, which relays keys only). Each pair of nodes derives the same 256-bit seed from their key
agreement (HKDF-SHA256, bound to the run, the round and the pair), and expands it with ChaCha20 into a
mask of 64-bit words. The lower rank adds the mask, the higher subtracts it, modulo 2^64: every mask
cancels in the sum, and a node's masked release is uniform to anyone who lacks one of its pairs'
seeds. Releases travel as fixed-point integers modulo 2^64 (`to_ring`, `from_ring`). Every primitive is
the `cryptography` package's; nothing here is a cipher.

A node that leaves after the key agreement leaves its masks in the others' releases: the sum of the
rest is then noise, so the round is run again without it (`coordination.secure_exchange`).
"""
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppsdg.errors import FederationError

SEED_BYTES = 32
NONCE = bytes(16)  # a ChaCha20 key (a pair's seed) is used for one mask only
WORD = np.dtype("<u8")
# Fixed-point values are int64 in the ring: their sum must stay within +-2^63.
LIMIT = float(1 << 62)


def key_pair() -> tuple[X25519PrivateKey, bytes]:
    """A node's ephemeral key for one round, and its public part as the 32 bytes it publishes."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pair_seed(private: X25519PrivateKey, peer: bytes, context: bytes, ranks: tuple[int, int]) -> bytes:
    """The seed two nodes share: their key agreement, bound by HKDF to the run and round (`context`) and to
    the pair, so that no seed serves twice."""
    low, high = sorted(ranks)
    shared = private.exchange(X25519PublicKey.from_public_bytes(peer))
    info = context + b"|pair|" + low.to_bytes(4, "big") + high.to_bytes(4, "big")
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def mask(seed: bytes, size: int) -> np.ndarray:
    """`size` uniform 64-bit words: ChaCha20's keystream under the seed."""
    stream = Cipher(algorithms.ChaCha20(seed, NONCE), mode=None).encryptor().update(bytes(size * WORD.itemsize))
    return np.frombuffer(stream, dtype=WORD).astype(np.uint64)


def masked(values: np.ndarray, rank: int, private: X25519PrivateKey, peers: Mapping[int, bytes],
           context: bytes) -> np.ndarray:
    """A node's release in the ring (uint64), masked with one mask for each other node of the round:
    added where this node has the lower rank, subtracted where it has the higher."""
    total = values.astype(np.uint64, copy=True)
    for peer_rank, peer in sorted(peers.items()):
        if peer_rank == rank:
            continue
        words = mask(pair_seed(private, peer, context, (rank, peer_rank)), total.size).reshape(total.shape)
        total = total + words if rank < peer_rank else total - words
    return total


def ring_sum(releases: Sequence[np.ndarray]) -> np.ndarray:
    """The sum of the nodes' masked releases modulo 2^64: the masks cancel."""
    total = np.zeros_like(releases[0], dtype=np.uint64)
    for release in releases:
        total = total + release.astype(np.uint64)
    return total


def to_ring(values: np.ndarray) -> np.ndarray:
    """Whole fixed-point values (int64) as two's complement in the ring; refused beyond +-2^62, so that a
    sum of a few of them cannot wrap."""
    values = np.asarray(values, dtype=np.int64)
    if not np.all(np.abs(values) < LIMIT):
        raise FederationError("a release is outside what the ring holds (|value| in fixed point < 2^62)")
    return values.view(np.uint64)


def from_ring(total: np.ndarray, scale: float) -> np.ndarray:
    """The signed fixed-point sum, back to numbers."""
    return total.astype(np.uint64).view(np.int64).astype(np.float64) / scale
