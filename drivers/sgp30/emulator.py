"""The SGP30 itself, emulated: the chip's side of the I2C protocol, with no I/O.

Attach :class:`SGP30Model` to a :class:`drivers.emulation.i2c.FakeBus`::

    >>> from drivers.emulation.i2c import FakeBus
    >>> bus = FakeBus({0x58: SGP30Model(quiet_room(seed=1))})

Behaviour (Sensirion SGP30 datasheet; see also :mod:`drivers.sgp30.codec`):

* a command is a write; its reply is read in a *separate* transfer after the
  command's execution time (12 ms for measure_iaq, 25 ms for the raw signals,
  220 ms for the self-test...). Until then every transfer is NACKed (the chip
  does not stretch the clock), and so is a write and read in one transaction;
* a reply is read once; a read with nothing to read is acknowledged and reads
  0xFF (i2cdetect lists the chip); an unknown command, a wrong number of
  arguments or a bad argument CRC is NACKed;
* ``iaq_init`` starts the IAQ algorithm with a fresh baseline; for the next 15 s
  ``measure_iaq`` returns the fixed 400 ppm / 0 ppb, then the source's values.
  Before any ``iaq_init`` (after power-up or a self-test) it also returns
  400/0: the algorithm is not running (an assumption; the datasheet only says
  to send iaq_init first);
* ``get_iaq_baseline`` returns eCO2 then TVOC baseline; ``set_iaq_baseline``
  takes TVOC then eCO2 and round-trips exactly;
* ``set_absolute_humidity`` stores the 8.8 word; 0 restores the default
  (0x0B92, compensation off); power-up restores it too;
* ``measure_raw_signals`` returns the source's H2 and ethanol ticks;
  ``measure_test`` returns 0xD400 and, like the real chip, stops the IAQ
  algorithm (it must be re-initialised); ``get_feature_set`` 0x0022;
  ``get_serial_id`` three words.

Values come from a *gas source*, a callable of the model's clock returning a
:class:`GasSample`: :class:`SmokeReplay` replays the smoke-detection dataset
(eCO2, TVOC, raw H2, raw ethanol recorded at 1 Hz by a real SGP30) when
``../shared`` is present, :func:`quiet_room` makes up a clean indoor room.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ..emulation.i2c import Nack
from ..sensirion import CRCError
from . import codec as c
from .codec import Baseline

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_CSV_NAME = "smoke_detection_16col_rows0-10080.csv"
SMOKE_CSV_ENV = "CITYNODE_SGP30_CSV"
SERIAL_ID = 0x0000_0D4A_71F2  # made up (48 bits)
FEATURE_SET = 0x0022  # product type 0 (SGP30), feature set version 0x22
#: The baseline a fresh iaq_init starts from (made up, typical magnitudes).
FRESH_BASELINE = Baseline(eco2=0x8F3A, tvoc=0x9102)
POWER_UP_S = 0.0006  # the datasheet's power-up time (max 0.6 ms)


@dataclass(frozen=True, slots=True)
class GasSample:
    """What the air would make the chip report: eCO2 ppm, TVOC ppb, raw ticks."""

    eco2: float
    tvoc: float
    h2: float
    ethanol: float


GasSource = Callable[[float], GasSample]


# -- sources ----------------------------------------------------------------------------
def find_smoke_csv() -> Path | None:
    """The smoke dataset: ``$CITYNODE_SGP30_CSV``, ``$CITYNODE_SHARED/data/smoke/...``, else
    ``../shared/data/smoke/...`` beside the repository; None when absent."""
    env = os.environ.get(SMOKE_CSV_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{SMOKE_CSV_ENV}={env}: no such file")
        return p
    shared = os.environ.get("CITYNODE_SHARED")
    for root in ([Path(shared)] if shared else []) + [REPO_ROOT.parent / "shared"]:
        p = root / "data" / "smoke" / SMOKE_CSV_NAME
        if p.is_file():
            return p
    return None


class SmokeReplay:
    """Replays the smoke dataset's SGP30 columns at 1 row per second (times ``speed``).

    The first call fixes time zero; row ``start_row + (now - t0) * speed``, wrapping
    around at the end. Rows 0-3177 are clean air, from 3178 on a fire test.
    """

    COLUMNS = ("eCO2[ppm]", "TVOC[ppb]", "Raw H2", "Raw Ethanol")

    def __init__(self, path: str | os.PathLike[str], *, speed: float = 1.0,
                 start_row: int = 0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.path = Path(path)
        # one compact column per quantity: the emulator runs inside the daemon, whose
        # memory is budgeted (10,080 GasSample objects would cost about 1.5 MiB)
        self._cols = tuple(array("d") for _ in self.COLUMNS)
        with self.path.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                try:
                    values = [float(row[k]) for k in self.COLUMNS]
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{self.path}: not the smoke dataset ({exc})") from None
                for col, v in zip(self._cols, values, strict=True):
                    col.append(v)
        self.n_rows = len(self._cols[0])
        if not self.n_rows:
            raise ValueError(f"{self.path}: no rows")
        self.speed = speed
        self.start_row = start_row % self.n_rows
        self._t0: float | None = None
        self.description = f"smoke dataset replay {self.path.name} from row {self.start_row}"

    def row_at(self, now: float) -> int:
        if self._t0 is None:
            self._t0 = now
        return (self.start_row + int((now - self._t0) * self.speed)) % self.n_rows

    def row(self, i: int) -> GasSample:
        """Row ``i`` of the recording."""
        return GasSample(*(col[i] for col in self._cols))

    def __call__(self, now: float) -> GasSample:
        return self.row(self.row_at(now))


def quiet_room(seed: int | None = 0) -> GasSource:
    """Clean indoor air: eCO2 400-430 ppm and TVOC 5-40 ppb breathing slowly over two hours,
    raw ticks near the smoke dataset's clean-air values (H2 ~13000, ethanol ~19900)."""
    rng = random.Random(seed)
    phase = rng.uniform(0, 2 * math.pi)

    def sample(now: float) -> GasSample:
        w = 0.5 + 0.5 * math.sin(2 * math.pi * now / 7200.0 + phase)
        tvoc = max(0.0, 5 + 30 * w + rng.gauss(0, 3))
        eco2 = 400 + 25 * w + abs(rng.gauss(0, 2))
        # More reducing gas -> lower raw ticks (the signal is a log of the resistance).
        h2 = 13050 - 0.8 * tvoc + rng.gauss(0, 5)
        ethanol = 19950 - 1.5 * tvoc + rng.gauss(0, 6)
        return GasSample(eco2, tvoc, h2, ethanol)

    sample.description = f"quiet room (seed {seed})"  # type: ignore[attr-defined]
    return sample


def default_source(kind: str = "quiet", *, seed: int | None = 0,
                   speed: float = 1.0) -> GasSource:
    """``"smoke"``: the dataset replay if the file is found (else the quiet room, with a
    warning); ``"quiet"``: the quiet room."""
    if kind not in ("quiet", "smoke"):
        raise ValueError(f"unknown SGP30 emulator source {kind!r}: 'quiet' or 'smoke'")
    if kind == "smoke":
        path = find_smoke_csv()
        if path is not None:
            return SmokeReplay(path, speed=speed)
        log.warning("SGP30 emulator: smoke dataset not found (../shared/data/smoke); "
                    "using the quiet-room source")
    return quiet_room(seed)


# -- the chip ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sent:
    """A measurement the model returned: when, which command, the words sent."""

    t: float
    code: int
    words: tuple[int, int]
    warming_up: bool


class SGP30Model:
    """Device side of an SGP30 (implements :class:`drivers.emulation.i2c.I2CModel`).

    State is public for tests and the simulator: :attr:`baseline`,
    :attr:`humidity_word`, :attr:`humidity_compensation`, :attr:`iaq_started`,
    :attr:`sent`, :attr:`stats`.
    """

    stretch_s = 0.0  # the SGP30 does not stretch the clock

    def __init__(
        self,
        source: GasSource | None = None,
        *,
        seed: int | None = 0,
        serial: int = SERIAL_ID,
        feature_set: int = FEATURE_SET,
        fresh_baseline: Baseline = FRESH_BASELINE,
        warmup_s: float = c.WARMUP_S,
        self_test_result: int = c.MEASURE_TEST_OK,
        keep: int = 1000,
    ) -> None:
        self.source: GasSource = source if source is not None else quiet_room(seed)
        self.serial = serial & 0xFFFF_FFFF_FFFF
        self.feature_set = feature_set
        self.fresh_baseline = fresh_baseline
        self.warmup_s = warmup_s
        self.self_test_result = self_test_result
        self.sent: deque[Sent] = deque(maxlen=keep)
        self.stats = {"transfers": 0, "nacks": 0, "commands": 0, "iaq_inits": 0,
                      "measurements": 0, "raw_measurements": 0, "baseline_sets": 0,
                      "humidity_sets": 0, "bad_crc": 0, "unknown": 0, "busy": 0,
                      "repeated_starts": 0, "self_tests": 0, "resets": 0}
        self.power_cycle(float("-inf"))
        self.stats["resets"] = 0

    # -- power ------------------------------------------------------------------------
    def power_cycle(self, now: float) -> None:
        """Power-up: algorithm stopped, no baseline, default humidity, nothing to read."""
        self.iaq_started: float | None = None
        self.baseline = Baseline(0, 0)
        self.baseline_restored = False
        self.humidity_word = c.DEFAULT_HUMIDITY_WORD
        self.humidity_compensation = False
        self._pending: tuple[float, int, bytes] | None = None  # ready at, command, reply
        self._busy_until = now + POWER_UP_S if math.isfinite(now) else now
        self.stats["resets"] += 1

    def warming_up(self, now: float) -> bool:
        return self.iaq_started is None or now - self.iaq_started < self.warmup_s

    # -- I2CModel ---------------------------------------------------------------------
    def transfer(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]:
        self.stats["transfers"] += 1
        if now < self._busy_until:
            self._nack("busy")
        if self._pending is not None and now < self._pending[0]:
            self._nack("busy")  # still executing: no ACK to anything
        if len(parts) != 1:
            self._nack("repeated_starts")  # the reply is never ready that soon
        kind, val = parts[0]
        if kind == "w":
            self._write(bytes(val), now)  # type: ignore[arg-type]
            return []
        return [self._read(int(val))]  # type: ignore[arg-type]

    # -- internals ------------------------------------------------------------------------
    def _nack(self, why: str | None = None) -> NoReturn:
        self.stats["nacks"] += 1
        if why:
            self.stats[why] += 1
        raise Nack()

    def _write(self, data: bytes, now: float) -> None:
        if not data:
            return  # an address probe: acknowledged
        try:
            code, args = c.parse_write(data)
        except CRCError:
            self._nack("bad_crc")
        except ValueError:
            self._nack("unknown")
        info = c.COMMANDS.get(code)
        if info is None or len(args) != info.args or code in (
                c.GET_TVOC_INCEPTIVE_BASELINE, c.SET_TVOC_BASELINE):
            self._nack("unknown")  # (the TVOC-only baseline commands are not modelled)
        self.stats["commands"] += 1
        self._pending = None
        reply = self._execute(code, args, now)
        if reply is not None:
            self._pending = (now + info.duration_s, code, reply)
        else:
            self._busy_until = now + info.duration_s

    def _execute(self, code: int, args: list[int], now: float) -> bytes | None:
        if code == c.IAQ_INIT:
            self.iaq_started = now
            self.baseline = self.fresh_baseline
            self.baseline_restored = False
            self.stats["iaq_inits"] += 1
            return None
        if code == c.MEASURE_IAQ:
            warm = self.warming_up(now)
            if warm:
                words = (c.WARMUP_ECO2, c.WARMUP_TVOC)
            else:
                s = self.source(now)
                words = (min(60000, max(400, round(s.eco2))), min(60000, max(0, round(s.tvoc))))
            self.stats["measurements"] += 1
            self.sent.append(Sent(now, code, words, warm))
            return c.encode_words(*words)
        if code == c.MEASURE_RAW:
            s = self.source(now)
            words = (min(0xFFFF, max(0, round(s.h2))), min(0xFFFF, max(0, round(s.ethanol))))
            self.stats["raw_measurements"] += 1
            self.sent.append(Sent(now, code, words, False))
            return c.encode_words(*words)
        if code == c.GET_IAQ_BASELINE:
            return c.encode_words(self.baseline.eco2, self.baseline.tvoc)  # eCO2 first
        if code == c.SET_IAQ_BASELINE:
            tvoc, eco2 = args  # TVOC first on the way in
            self.baseline = Baseline(eco2, tvoc)
            self.baseline_restored = True
            self.stats["baseline_sets"] += 1
            return None
        if code == c.SET_ABSOLUTE_HUMIDITY:
            (word,) = args
            self.humidity_compensation = word != 0
            self.humidity_word = word or c.DEFAULT_HUMIDITY_WORD
            self.stats["humidity_sets"] += 1
            return None
        if code == c.MEASURE_TEST:
            self.iaq_started = None  # the self-test stops the IAQ algorithm
            self.stats["self_tests"] += 1
            return c.encode_words(self.self_test_result)
        if code == c.GET_FEATURE_SET:
            return c.encode_words(self.feature_set)
        if code == c.GET_SERIAL_ID:
            s = self.serial
            return c.encode_words(s >> 32 & 0xFFFF, s >> 16 & 0xFFFF, s & 0xFFFF)
        raise AssertionError(f"unhandled command 0x{code:04x}")  # pragma: no cover

    def _read(self, n: int) -> bytes:
        if self._pending is None:
            # Idle with nothing to read: the address is acknowledged and the bus reads
            # 0xFF (which is why i2cdetect's read probe lists an SGP30 at 0x58).
            self.stats["empty_reads"] = self.stats.get("empty_reads", 0) + 1
            return b"\xff" * n
        reply = self._pending[2]
        self._pending = None
        # The host decides the length: a short read stops early, a long one reads 0xFF.
        return (reply + b"\xff" * n)[:n]
