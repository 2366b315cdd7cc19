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
Words = np.ndarray[Any, np.dtype[np.uint32]]
Limbs = list[np.ndarray[Any, np.dtype[np.uint64]]]  # a 128-bit number: 32-bit limbs, low first


@cache
def _hash_constants(init: int, mult: int, count: int) -> tuple[tuple[np.uint32, np.uint32], ...]:
    """(xor, multiplier) of each successive hash step: the hash constant evolves per call."""
    pairs = []
    const = init
    for _ in range(count):
        following = (const * mult) & MASK32
        pairs.append((np.uint32(const), np.uint32(following)))
        const = following
    return tuple(pairs)


def _mixed(value: Words, xor: np.uint32, mult: np.uint32) -> Words:
    out = (value ^ xor) * mult
    out ^= out >> XSHIFT
    return out


def _mix(x: Words, y: Words) -> Words:
    out = x * np.uint32(MIX_MULT_L) - y * np.uint32(MIX_MULT_R)
    out ^= out >> XSHIFT
    return out


def _pool(entropy: Sequence[Words]) -> list[Words]:
    """SeedSequence.mix_entropy over columns of entropy words, one row per sequence."""
    extra = max(0, len(entropy) - POOL_SIZE)
    steps = iter(_hash_constants(INIT_A, MULT_A, POOL_SIZE * POOL_SIZE + POOL_SIZE * extra))
    zero = np.zeros_like(entropy[0])
    pool = [_mixed(entropy[i] if i < len(entropy) else zero, *next(steps)) for i in range(4)]
    for src in range(POOL_SIZE):
        for dst in range(POOL_SIZE):
            if src != dst:
                pool[dst] = _mix(pool[dst], _mixed(pool[src], *next(steps)))
    for word in entropy[POOL_SIZE:]:
        for dst in range(POOL_SIZE):
            pool[dst] = _mix(pool[dst], _mixed(word, *next(steps)))
    return pool


def _state_words(pool: list[Words], count: int) -> list[Words]:
    """SeedSequence.generate_state(count, np.uint32) from the mixed pool."""
    steps = _hash_constants(INIT_B, MULT_B, count)
    return [_mixed(pool[i % POOL_SIZE], *steps[i]) for i in range(count)]


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


def seed_states(seed: int, replications: np.ndarray[Any, Any]) -> list[Words]:
    """`SeedSequence([seed, r]).generate_state(8, np.uint32)` for each r: 8 columns."""
    reps = np.asarray(replications, dtype=U64)
    n = len(reps)
    seed_columns = [np.full(n, w, dtype=U32) for w in int_words(seed)]
    low = (reps & np.uint64(MASK32)).astype(U32)
    high = (reps >> np.uint64(32)).astype(U32)
    wide = high != 0  # these replications are two words long, the others one
    out = [np.empty(n, dtype=U32) for _ in range(8)]
    for rows, r_columns in ((~wide, [low]), (wide, [low, high])):
        if not rows.any():
            continue
        entropy = [c[rows] for c in seed_columns] + [c[rows] for c in r_columns]
        for column, words in zip(out, _state_words(_pool(entropy), 8), strict=True):
            column[rows] = words
    return out


# -- PCG64 ----------------------------------------------------------------------------

_MULT_LIMBS = [np.uint64((PCG_MULTIPLIER >> (32 * i)) & MASK32) for i in range(4)]
_M32 = np.uint64(MASK32)
_S32 = np.uint64(32)


def _add(a: Limbs, b: Limbs) -> Limbs:
    """a + b modulo 2**128."""
    out: Limbs = []
    carry = np.zeros_like(a[0])
    for x, y in zip(a, b, strict=True):
        total = x + y + carry
        out.append(total & _M32)
        carry = total >> _S32
    return out


def _step(state: Limbs, inc: Limbs) -> Limbs:
    """One step of PCG64's LCG: state * multiplier + inc, modulo 2**128."""
    a0, a1, a2, a3 = state
    m0, m1, m2, m3 = _MULT_LIMBS
    p00, p01, p10 = a0 * m0, a0 * m1, a1 * m0
    p02, p11, p20 = a0 * m2, a1 * m1, a2 * m0
    # Column sums of 32-bit halves stay far below 2**64; column 3 keeps its low word only.
    c0 = (p00 & _M32) + inc[0]
    c1 = (p00 >> _S32) + (p01 & _M32) + (p10 & _M32) + inc[1]
    c2 = (p01 >> _S32) + (p10 >> _S32) + (p02 & _M32) + (p11 & _M32) + (p20 & _M32) + inc[2]
    c3 = (p02 >> _S32) + (p11 >> _S32) + (p20 >> _S32) + a0 * m3 + a1 * m2 + a2 * m1
    c3 += a3 * m0 + inc[3]
    c1 += c0 >> _S32
    c2 += c1 >> _S32
    c3 += c2 >> _S32
    return [c0 & _M32, c1 & _M32, c2 & _M32, c3 & _M32]


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


def pcg64_seeded(words: list[Words]) -> tuple[Limbs, Limbs]:
    """PCG64's (state, inc) after `pcg64_set_seed` with generate_state(4, np.uint64).

    The four 64-bit words are seed[0] (high) and seed[1] (low) of the initial state, and
    inc[0] (high) and inc[1] (low) of the sequence; each 64-bit word is two 32-bit words,
    low first.
    """
    w = [column.astype(U64) for column in words]
    initstate = [w[2], w[3], w[0], w[1]]
    initseq = [w[6], w[7], w[4], w[5]]
    one = np.uint64(1)
    inc = [((initseq[0] << one) & _M32) | one]
    inc += [((initseq[i] << one) | (initseq[i - 1] >> np.uint64(31))) & _M32 for i in (1, 2, 3)]
    # From state 0: one step gives `inc`; add the initial state; one more step.
    return _step(_add(inc, initstate), inc), inc


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
