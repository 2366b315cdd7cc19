"""The random streams of many replications at once, bit for bit those of `default_rng`.

Replication `r` of seed `s` draws from `numpy.random.default_rng([s, r])`: a PCG64 seeded
by `SeedSequence([s, r])`. Building that generator costs about 10 µs, mostly the seed
sequence's hashing; a replication of a trivial model costs far less. `Streams` computes
the seed sequences and the PCG64 states of a whole set of replications with array
arithmetic, following numpy's own algorithm word for word, and then serves each
replication either as a `Generator` (one per `Streams`, whose state is set for each
replication) or as arrays of its first uniform draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
from numpy.random.bit_generator import ISpawnableSeedSequence

MASK32 = 0xFFFFFFFF
# numpy/random/bit_generator.pyx: the SeedSequence constants, pool of four 32-bit words.
POOL_SIZE = 4
INIT_A, MULT_A = 0x43B0D7E5, 0x931E8875
INIT_B, MULT_B = 0x8B51F9DD, 0x58F38DED
MIX_MULT_L, MIX_MULT_R = 0xCA01F9DD, 0x4973F715
XSHIFT = 16
# numpy/random/src/pcg64/pcg64.h: PCG_DEFAULT_MULTIPLIER_128.
PCG_MULTIPLIER = (2549297995355413924 << 64) | 4865540595714422341
DOUBLE_UNIT = 1.0 / 9007199254740992.0  # 2**-53, as numpy's next_double
MAX_REPLICATION = 2**63 - 1  # as SQLite stores it

U32 = np.dtype(np.uint32)
U64 = np.dtype(np.uint64)
# Words: 32-bit words, one row per word and one column per replication. Limbs: 128-bit
# numbers as four rows of 32-bit limbs (low first) in uint64, one column per replication.
Words = np.ndarray[Any, np.dtype[np.uint32]]
Limbs = np.ndarray[Any, np.dtype[np.uint64]]


@cache
def _hash_constants(init: int, mult: int, count: int) -> tuple[Words, Words]:
    """(xor, multiplier) of each successive hash step, as columns: the constant evolves."""
    xors, mults = [], []
    const = init
    for _ in range(count):
        xors.append(const)
        const = (const * mult) & MASK32
        mults.append(const)
    return np.array(xors, dtype=U32)[:, None], np.array(mults, dtype=U32)[:, None]


def _mixed(value: Words, xor: Words, mult: Words) -> Words:
    """numpy's `hashmix`, one hash step per row of `xor` and `mult`."""
    out: Words = (value ^ xor) * mult
    out ^= out >> XSHIFT
    return out


def _mix(x: Words, y: Words) -> Words:
    out: Words = x * np.uint32(MIX_MULT_L) - y * np.uint32(MIX_MULT_R)
    out ^= out >> XSHIFT
    return out


def _pool(entropy: Words) -> Words:
    """SeedSequence.mix_entropy: the mixed pool of four words of each column of entropy."""
    words, n = entropy.shape
    extra = max(0, words - POOL_SIZE)
    xors, mults = _hash_constants(INIT_A, MULT_A, POOL_SIZE * POOL_SIZE + POOL_SIZE * extra)
    padded = np.zeros((POOL_SIZE, n), dtype=U32)
    padded[: min(words, POOL_SIZE)] = entropy[:POOL_SIZE]
    pool = _mixed(padded, xors[:POOL_SIZE], mults[:POOL_SIZE])
    step = POOL_SIZE
    for src in range(POOL_SIZE):
        # Every other word mixes in a hash of `src`, which stays as it is meanwhile.
        others = [dst for dst in range(POOL_SIZE) if dst != src]
        hashed = _mixed(pool[src], xors[step : step + 3], mults[step : step + 3])
        pool[others] = _mix(pool[others], hashed)
        step += 3
    for word in entropy[POOL_SIZE:]:
        pool = _mix(pool, _mixed(word, xors[step : step + 4], mults[step : step + 4]))
        step += POOL_SIZE
    return pool


def _state_words(pool: Words, count: int) -> Words:
    """SeedSequence.generate_state(count, np.uint32) from the mixed pool."""
    xors, mults = _hash_constants(INIT_B, MULT_B, count)
    return _mixed(pool[[i % POOL_SIZE for i in range(count)]], xors, mults)


def int_words(value: int) -> list[int]:
    """An int as SeedSequence takes it: 32-bit words, lowest first; 0 is one word."""
    if value < 0:
        raise ValueError("expected a non-negative integer")
    words = [value & MASK32]
    value >>= 32
    while value:
        words.append(value & MASK32)
        value >>= 32
    return words


def seed_states(seed: int, replications: np.ndarray[Any, Any]) -> Words:
    """`SeedSequence([seed, r]).generate_state(8, np.uint32)` of each r: one column each."""
    reps = np.asarray(replications, dtype=U64)
    seed_words = np.array(int_words(seed), dtype=U32)[:, None]
    low = (reps & np.uint64(MASK32)).astype(U32)
    high = (reps >> np.uint64(32)).astype(U32)
    wide = high != 0  # these replications are two words long, the others one
    out = np.empty((8, len(reps)), dtype=U32)
    for columns, r_words in ((~wide, [low]), (wide, [low, high])):
        if not columns.any():
            continue
        n = int(np.count_nonzero(columns))
        entropy = np.vstack([np.repeat(seed_words, n, axis=1), *(w[columns] for w in r_words)])
        out[:, columns] = _state_words(_pool(entropy), 8)
    return out


# -- PCG64 ----------------------------------------------------------------------------

_M32 = np.uint64(MASK32)
_S32 = np.uint64(32)
# Column k of a product is the sum of a[i] * m[k - i]: this matrix holds m[k - i].
_MULTIPLIER = np.array(
    [
        [(PCG_MULTIPLIER >> (32 * (k - i))) & MASK32 if k >= i else 0 for i in range(4)]
        for k in range(4)
    ],
    dtype=U64,
)[:, :, None]


def _carried(columns: Limbs) -> Limbs:
    """Column sums (each below 2**64) as limbs modulo 2**128: carry upwards, then mask."""
    for k in range(1, 4):
        columns[k] += columns[k - 1] >> _S32
    columns &= _M32
    return columns


def _step(state: Limbs, inc: Limbs) -> Limbs:
    """One step of PCG64's LCG: state * multiplier + inc, modulo 2**128."""
    products = state[None, :, :] * _MULTIPLIER  # [k, i]: a[i] * m[k - i], both below 2**32
    columns = (products & _M32).sum(axis=1)
    columns[1:] += (products[:3] >> _S32).sum(axis=1)  # column 3's high words are past 2**128
    columns += inc
    return _carried(columns)


def _output(state: Limbs) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """PCG64's XSL-RR output: (high ^ low) rotated right by the top six bits."""
    high = (state[3] << _S32) | state[2]
    low = (state[1] << _S32) | state[0]
    x = high ^ low
    rot = state[3] >> np.uint64(26)
    out: np.ndarray[Any, np.dtype[np.uint64]] = (x >> rot) | (
        x << ((np.uint64(64) - rot) & np.uint64(63))
    )
    return out


def pcg64_seeded(words: Words) -> tuple[Limbs, Limbs]:
    """PCG64's (state, inc) after `pcg64_set_seed` with generate_state(4, np.uint64).

    The four 64-bit words are seed[0] (high) and seed[1] (low) of the initial state, and
    inc[0] (high) and inc[1] (low) of the sequence; each 64-bit word is two 32-bit words,
    low first.
    """
    w = words.astype(U64)
    initstate, initseq = w[[2, 3, 0, 1]], w[[6, 7, 4, 5]]
    inc = (initseq << np.uint64(1)) & _M32
    inc[1:] |= initseq[:3] >> np.uint64(31)
    inc[0] |= np.uint64(1)
    # From state 0: one step gives `inc`; add the initial state; one more step.
    return _step(_carried(inc + initstate), inc), inc


def as_int(limbs: Limbs) -> list[int]:
    """The 128-bit numbers as Python ints."""
    high = ((limbs[3] << _S32) | limbs[2]).tolist()
    low = ((limbs[1] << _S32) | limbs[0]).tolist()
    return [(h << 64) | lo for h, lo in zip(high, low, strict=True)]


def doubles(state: Limbs, inc: Limbs, count: int) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The first `count` `Generator.random()` draws from each state: shape (n, count)."""
    out = np.empty((len(state[0]), count), dtype=np.float64)
    for k in range(count):
        state = _step(state, inc)
        out[:, k] = (_output(state) >> np.uint64(11)).astype(np.float64) * DOUBLE_UNIT
    return out


# -- streams of a set of replications -------------------------------------------------


class ReplicationSeedSequence(ISpawnableSeedSequence):
    """The `SeedSequence([seed, replication])` of the replication a reused generator is at.

    Made only when a model asks for it (`rng.spawn`, `rng.bit_generator.seed_seq`), and
    made afresh for each replication, so that spawning gives the children that
    `default_rng([seed, replication]).spawn` gives.
    """

    def __init__(self, seed: int, replication: int) -> None:
        self.seed = seed
        self.replication = replication
        self._sequence: np.random.SeedSequence | None = None

    def point(self, replication: int) -> None:
        self.replication = replication
        self._sequence = None

    @property
    def sequence(self) -> np.random.SeedSequence:
        if self._sequence is None:
            self._sequence = np.random.SeedSequence([self.seed, self.replication])
        return self._sequence

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> np.ndarray[Any, Any]:
        return self.sequence.generate_state(n_words, dtype)

    def spawn(self, n_children: int) -> list[np.random.SeedSequence]:  # type: ignore[override]
        # numpy's own children, as `default_rng([seed, replication]).spawn` makes them.
        return self.sequence.spawn(n_children)

    def __getattr__(self, name: str) -> Any:
        # entropy, spawn_key, pool_size, n_children_spawned, state: as the real one.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.sequence, name)


class Streams:
    """The random streams of replications `replications` of `seed`, computed together.

    `generator(i)` is the stream of the i-th replication as a `numpy.random.Generator`,
    equal draw for draw to `default_rng([seed, replications[i]])`; it is one generator
    whose state is set anew on each call, so use it before asking for the next one, and
    use a `Streams` from one thread only. `doubles(k)` gives the first `k` draws of
    `Generator.random()` of every replication as an array, and `take(positions)` a
    `Streams` of some of the replications that shares what is already computed.
    """

    def __init__(self, seed: int, replications: Sequence[int] | np.ndarray[Any, Any]) -> None:
        reps = np.asarray(replications)
        if reps.ndim != 1 or (len(reps) and (reps.dtype.kind not in "iu" or reps.min() < 0)):
            raise ValueError("replications must be non-negative integers")
        if len(reps) and reps.dtype.kind == "u" and reps.max() > MAX_REPLICATION:
            raise ValueError(f"replications must be at most {MAX_REPLICATION}")
        self.seed = seed
        self.replications = reps.astype(np.int64, copy=False)
        self._root = self
        self._index: np.ndarray[Any, np.dtype[np.intp]] | None = None
        self._seeded: tuple[Limbs, Limbs] | None = None
        self._doubles = np.empty((len(reps), 0))
        self._states: list[dict[str, Any]] | None = None
        self._generator: np.random.Generator | None = None
        self._seed_sequence: ReplicationSeedSequence | None = None

    def __len__(self) -> int:
        return len(self.replications)

    def take(self, positions: Sequence[int] | np.ndarray[Any, Any]) -> Streams:
        """The streams of `replications[positions]`, sharing this one's computed states."""
        index = np.asarray(positions, dtype=np.intp)
        root = self._root
        if self._index is not None:
            index = self._index[index]
        part = Streams(self.seed, root.replications[index])
        part._root, part._index = root, index
        return part

    def doubles(self, count: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The first `count` draws of `Generator.random()` of each stream: shape (n, count)."""
        root = self._root
        if root._doubles.shape[1] < count:
            state, inc = root._pcg64()
            root._doubles = doubles(state, inc, count)
            root._doubles.flags.writeable = False
        if self._index is None:
            return root._doubles[:, :count]
        return root._doubles[self._index, :count]

    def generator(self, position: int) -> np.random.Generator:
        """The stream of `replications[position]`, from its first draw."""
        root = self._root
        at = position if self._index is None else int(self._index[position])
        states = root._states if root._states is not None else root._pcg64_states()
        if root._generator is None or root._seed_sequence is None:
            root._seed_sequence = ReplicationSeedSequence(self.seed, 0)
            root._generator = np.random.Generator(np.random.PCG64(root._seed_sequence))
        root._seed_sequence.point(int(root.replications[at]))
        root._generator.bit_generator.state = states[at]
        return root._generator

    def _pcg64(self) -> tuple[Limbs, Limbs]:
        if self._seeded is None:
            self._seeded = pcg64_seeded(seed_states(self.seed, self.replications))
        return self._seeded

    def _pcg64_states(self) -> list[dict[str, Any]]:
        state, inc = self._pcg64()
        self._states = [
            {
                "bit_generator": "PCG64",
                "state": {"state": s, "inc": i},
                "has_uint32": 0,
                "uinteger": 0,
            }
            for s, i in zip(as_int(state), as_int(inc), strict=True)
        ]
        return self._states
