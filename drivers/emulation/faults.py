"""Line faults for emulated serial devices: noise, bad checksums, cut and lost frames.

A real UART on a Pi sees garbage when the fan browns out the supply, bit errors
on long unshielded leads, frames cut short when a cable wiggles, and frames
that never arrive. :class:`FaultInjector` reproduces those on the emulator's
outgoing chunks (one frame per chunk, as the device model emits them), from a
seeded random generator so a failing test can be replayed exactly, and it
counts what it did so a test can check that every frame it left intact was
recovered by the host.

The CLI takes the same settings as a compact string::

    >>> FaultInjector.from_spec("noise=0.05,checksum=0.02,truncate=0.02,drop=0.01", seed=1)
    FaultInjector(noise=0.05, checksum=0.02, truncate=0.02, drop=0.01, seed=1)
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass

#: Keys a fault spec may hold, and what each rate means (probability per chunk).
FAULT_KINDS = {
    "noise": "insert garbage bytes before or inside a chunk",
    "checksum": "flip one bit after the start bytes (a bad-checksum frame)",
    "truncate": "cut the tail off a chunk",
    "drop": "lose a chunk entirely",
}
#: Bytes that look like the start of a frame on common serial sensors (PMS5003
#: ``42 4D``, SDS011 ``AA``/``AB``, Modbus-ish ``F8``...): garbage made of them
#: tempts a decoder that resyncs on one byte into losing the next real frame.
TEMPTING = (0x42, 0x4D, 0x42, 0x4D, 0xAA, 0xAB, 0x00, 0x1C, 0x04, 0xFF)


@dataclass(slots=True)
class FaultCounts:
    """What the injector did; ``intact`` chunks went out unchanged."""

    chunks: int = 0
    intact: int = 0
    noise: int = 0
    noise_inside: int = 0
    noise_bytes: int = 0
    checksum: int = 0
    truncate: int = 0
    drop: int = 0

    @property
    def damaged(self) -> int:
        """Chunks that can no longer be decoded (dropped, cut, corrupted)."""
        return self.chunks - self.intact

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def parse_fault_spec(spec: str) -> dict[str, float]:
    """Parse ``"noise=0.05,drop=0.01"`` into rates; raise ValueError saying what is wrong.

    An empty string or ``"none"`` means no faults. ``seed=N`` is accepted and
    returned as a float (use :meth:`FaultInjector.from_spec` to get an int).
    """
    rates: dict[str, float] = {}
    text = spec.strip()
    if not text or text.lower() == "none":
        return rates
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise ValueError(f"fault spec item {item!r} is not KEY=RATE (e.g. noise=0.05)")
        if key not in FAULT_KINDS and key != "seed":
            known = ", ".join([*FAULT_KINDS, "seed"])
            raise ValueError(f"unknown fault {key!r} in {spec!r}; known: {known}")
        if key in rates:
            raise ValueError(f"fault {key!r} given twice in {spec!r}")
        try:
            rate = float(value)
        except ValueError:
            raise ValueError(f"fault {key!r}: {value.strip()!r} is not a number") from None
        if key == "seed":
            if rate != int(rate):
                raise ValueError(f"seed must be an integer, not {value.strip()!r}")
        elif not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault {key!r}: rate {rate:g} is outside 0..1 (a probability)")
        rates[key] = rate
    _check_total(rates)
    return rates


def _check_total(rates: dict[str, float]) -> None:
    # drop, checksum and truncate are exclusive outcomes for one chunk.
    total = sum(rates.get(k, 0.0) for k in ("drop", "checksum", "truncate"))
    if total > 1.0:
        raise ValueError(f"drop + checksum + truncate = {total:g}; they must add up to at most 1")


class FaultInjector:
    """Damage outgoing chunks at random, reproducibly, and count the damage.

    Per chunk, at most one of drop / checksum / truncate happens (their rates
    must sum to at most 1); noise is drawn independently and goes either before
    the chunk (the frame stays intact) or inside it (the frame is damaged).
    The last ``record`` intact chunks are kept in :attr:`intact` for tests.
    """

    def __init__(
        self,
        *,
        noise: float = 0.0,
        checksum: float = 0.0,
        truncate: float = 0.0,
        drop: float = 0.0,
        seed: int | None = None,
        max_noise_bytes: int = 8,
        header_len: int = 2,
        record: int = 1000,
    ) -> None:
        rates = {"noise": noise, "checksum": checksum, "truncate": truncate, "drop": drop}
        for key, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault {key!r}: rate {rate:g} is outside 0..1 (a probability)")
        _check_total(rates)
        if max_noise_bytes < 1:
            raise ValueError("max_noise_bytes must be at least 1")
        self.noise = noise
        self.checksum = checksum
        self.truncate = truncate
        self.drop = drop
        self.seed = seed
        self.max_noise_bytes = max_noise_bytes
        #: Bit flips spare the first ``header_len`` bytes, so a flipped frame is
        #: still recognised as a frame and fails on its checksum.
        self.header_len = header_len
        self.rng = random.Random(seed)
        self.counts = FaultCounts()
        self.intact: deque[bytes] = deque(maxlen=record)

    @classmethod
    def from_spec(cls, spec: str, seed: int | None = None, **kwargs: int) -> FaultInjector:
        """Build from a CLI spec string; a ``seed=N`` item in the spec wins over ``seed``."""
        rates = parse_fault_spec(spec)
        if "seed" in rates:
            seed = int(rates.pop("seed"))
        return cls(**rates, seed=seed, **kwargs)

    @property
    def active(self) -> bool:
        """False when every rate is zero (the injector passes chunks through)."""
        return any((self.noise, self.checksum, self.truncate, self.drop))

    def spec(self) -> str:
        """The settings as a spec string (round-trips through :meth:`from_spec`)."""
        parts = [f"{k}={getattr(self, k):g}" for k in FAULT_KINDS if getattr(self, k)]
        return ",".join(parts) or "none"

    def __repr__(self) -> str:
        rates = ", ".join(f"{k}={getattr(self, k):g}" for k in FAULT_KINDS)
        return f"FaultInjector({rates}, seed={self.seed})"

    def __call__(self, chunk: bytes) -> bytes:
        return self.apply(chunk)

    def apply(self, chunk: bytes) -> bytes:
        """Return what goes on the wire for one chunk the device meant to send."""
        if not chunk:
            return chunk
        c = self.counts
        rng = self.rng
        c.chunks += 1
        out = bytearray(chunk)
        damaged = True
        r = rng.random()
        if r < self.drop:
            c.drop += 1
            out.clear()
        elif r < self.drop + self.checksum and len(out) > self.header_len:
            c.checksum += 1
            i = rng.randrange(self.header_len, len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif r < self.drop + self.checksum + self.truncate and len(out) > 1:
            c.truncate += 1
            del out[rng.randrange(1, len(out)) :]
        else:
            damaged = False
        if self.noise and rng.random() < self.noise:
            garbage = self._garbage()
            c.noise += 1
            c.noise_bytes += len(garbage)
            if out and len(out) > 1 and rng.random() < 0.5:
                c.noise_inside += 1
                damaged = True
                i = rng.randrange(1, len(out))
                out[i:i] = garbage
            else:
                out[:0] = garbage
        if not damaged:
            c.intact += 1
            self.intact.append(bytes(chunk))
        return bytes(out)

    def _garbage(self) -> bytes:
        rng = self.rng
        n = rng.randint(1, self.max_noise_bytes)
        out = bytearray()
        while len(out) < n:
            roll = rng.random()
            if roll < 0.25:
                out += b"\x42\x4d"  # a whole false start sequence
            elif roll < 0.6:
                out.append(rng.choice(TEMPTING))
            else:
                out.append(rng.randrange(256))
        return bytes(out[:n])
