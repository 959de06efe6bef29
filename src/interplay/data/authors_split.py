"""The row permutation of the authors' data loader (`data.split: authors`), computed without JAX.

The authors' code (EmanuelSommer/bnn_interplay_priors_overparam, `src/sai/training/trainer.py` and
`src/sai/dataset/`) shuffles a table's rows once, before splitting it 70/10/20 in order, with JAX 0.4.33's
default PRNG (threefry2x32, the original, non-"partitionable" key derivation). The keys, for the config's
`rng` (42 in all their configs):

- the trainer holds a key stream started at `jax.random.key(rng)`; each draw splits the stream's key in
  two, keeps the first half and hands out the second. Draw 1 makes the ensemble/sampling/evaluation keys,
  draw 2 the chains' keys, draw 3 is the data loader's key;
- the loader keeps a stream of its own from that key: draw 1 makes its chains' keys, draw 2 is the key of
  `jax.random.permutation(key, arange(n))`, the permutation of the rows.

JAX 0.5 made `jax_threefry_partitionable` the default, which changes `split` and the random bits, hence
the permutation; this module implements the old semantics in NumPy from the algorithm (Salmon et al.,
"Parallel random numbers: as easy as 1, 2, 3", 2011, Threefry-2x32 with 20 rounds, as JAX implements it),
so the split does not depend on the installed JAX. tests/test_data_authors_split.py checks every function
against JAX run with `jax_threefry_partitionable` off.
"""

from __future__ import annotations

import math

import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)
_UINT32_MAX = 2**32 - 1
# Rounds of sorting by fresh random 32-bit keys in jax.random.permutation: ceil(3 ln n / ln(2^32 - 1)).
_SHUFFLE_EXPONENT = 3
# Draws of the trainer's and then the loader's key stream (module doc) that make the shuffle's key.
TRAINER_LOADER_DRAW = 3
LOADER_SHUFFLE_DRAW = 2


def _rotate_left(x: np.ndarray, distance: int) -> np.ndarray:
    return (x << np.uint32(distance)) | (x >> np.uint32(32 - distance))


def threefry2x32(key: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 (20 rounds) of the word pairs (x0[i], x1[i]) under the key (key[0], key[1]), uint32."""
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    schedule = (k0, k1, k0 ^ k1 ^ _KEY_PARITY)
    x0 = np.asarray(x0, np.uint32) + schedule[0]
    x1 = np.asarray(x1, np.uint32) + schedule[1]
    for group in range(5):
        for distance in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + schedule[(group + 1) % 3]
        x1 = x1 + schedule[(group + 2) % 3]
        x1 = x1 + np.uint32(group + 1)
    return x0, x1


def hash_counter(key: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """JAX's `threefry_2x32(key, counts)`: the counts (padded with one 0 to even length) split in a first
    and a second half, hashed pairwise, the two output halves concatenated (and the pad dropped)."""
    counts = np.asarray(counts, np.uint32).ravel()
    n = counts.size
    padded = np.concatenate([counts, np.zeros(n % 2, np.uint32)])
    half = padded.size // 2
    y0, y1 = threefry2x32(key, padded[:half], padded[half:])
    return np.concatenate([y0, y1])[:n]


def key_from_seed(seed: int) -> np.ndarray:
    """`jax.random.key(seed)` / `PRNGKey(seed)` of threefry: the words (0, seed) for 0 <= seed < 2^31, the
    seeds JAX takes with its default 32-bit integers."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**31:
        raise ValueError(f"the authors' rng must be an integer in [0, 2^31), got {seed!r}")
    return np.array([0, int(seed)], np.uint32)


def split(key: np.ndarray, num: int = 2) -> np.ndarray:
    """`jax.random.split(key, num)` with the original semantics: (num, 2) words, hashes of 0 .. 2 num - 1."""
    return hash_counter(key, np.arange(2 * num, dtype=np.uint32)).reshape(num, 2)


def random_bits(key: np.ndarray, n: int) -> np.ndarray:
    """`jax.random.bits(key, (n,))` (32-bit words) with the original semantics: hashes of 0 .. n - 1."""
    if n > _UINT32_MAX:
        raise ValueError(f"at most 2^32 - 1 words per call, got {n}")
    return hash_counter(key, np.arange(n, dtype=np.uint32))


def permutation(key: np.ndarray, n: int) -> np.ndarray:
    """`jax.random.permutation(key, jnp.arange(n))`: rounds of a stable sort of the indices by fresh
    random words, each round's key split off the previous one."""
    rounds = math.ceil(_SHUFFLE_EXPONENT * math.log(max(1, n)) / math.log(_UINT32_MAX))
    order = np.arange(n, dtype=np.int64)
    for _ in range(rounds):
        key, subkey = split(key)
        order = order[np.argsort(random_bits(subkey, n), kind="stable")]
    return order


def stream_draw(key: np.ndarray, draw: int) -> np.ndarray:
    """The key handed out by the `draw`-th draw (1-based) of a stream started at `key`: each draw splits
    the stream's key, keeps the first half and hands out the second (the authors' `key` property)."""
    for _ in range(draw):
        key, handed_out = split(key)
    return handed_out


def authors_permutation(n_rows: int, rng: int = 42) -> np.ndarray:
    """The order in which the authors' loader puts a table's `n_rows` rows for their config's `rng`: row
    `order[i]` of the table is row i of the shuffled data (train, then valid, then test; module doc)."""
    loader_key = stream_draw(key_from_seed(rng), TRAINER_LOADER_DRAW)
    return permutation(stream_draw(loader_key, LOADER_SHUFFLE_DRAW), int(n_rows))
