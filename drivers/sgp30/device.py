"""An SGP30 on an I2C bus: the codec plus an smbus2-like bus, and the baseline kept on disk.

    >>> from drivers.sgp30 import SGP30
    >>> gas = SGP30(1, baseline_path="/var/lib/citynode/sgp30-gas-baseline.json")
    >>> gas.open()            # feature set, serial, iaq_init, restore a saved baseline
    >>> readings = gas.poll() # measure_iaq once a second (+ raw signals)
    >>> gas.close()           # saves the baseline

Every command is a write (with a STOP) and, if it returns data, a separate read
after the command's execution time, as on the other Sensirion chips.

Why the baseline matters: the chip's eCO2/TVOC are relative to a baseline its
algorithm learns while ``measure_iaq`` is called every second. After
``iaq_init`` without a stored baseline it needs 12 h to learn a reliable one;
restoring a stored one (younger than 7 days) makes it right at once. So the
driver reads the baseline every hour (and at close) and saves it atomically,
with its time and the chip's serial number, to ``baseline_path``; it only saves
once the baseline is reliable (12 h after a fresh start, or at once after a
restore), and restores it on :meth:`SGP30.open`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Unpack

from ..base import DeviceError, DeviceGone, Reading
from ..files import write_atomic
from ..i2cdev import BusOptions, SingleShotDevice
from ..sensirion import CRCError
from . import codec as c
from .codec import AirQuality, Baseline, FeatureSet, RawSignals

log = logging.getLogger(__name__)

#: The values an SGP30 reading carries, named as in agent/wire/quantities.py.
QUANTITIES = ("eco2", "tvoc", "h2_raw", "ethanol_raw")
RAW_QUANTITIES = ("h2_raw", "ethanol_raw")

BASELINE_MAX_AGE_S = 7 * 86400.0  # datasheet: do not restore an older baseline
BASELINE_RELIABLE_AFTER_S = 12 * 3600.0  # datasheet: first baseline after a fresh start
BASELINE_SAVE_S = 3600.0  # datasheet: read and store the baseline every hour
CLOCK_SKEW_S = 86400.0  # a file dated this far in the future: the clock is wrong, skip
#: Extra time after the datasheet's maximum before reading.
MARGIN_S = 0.001
CRC_RETRIES_ON_OPEN = 2

T = TypeVar("T")
HumiditySource = Callable[[], "tuple[float, float] | None"]


@dataclass(frozen=True, slots=True)
class Measurement:
    """One poll's values: eCO2 ppm, TVOC ppb, and the raw ticks when they were read."""

    eco2: int
    tvoc: int
    h2_raw: int | None = None
    ethanol_raw: int | None = None


@dataclass(frozen=True, slots=True)
class SavedBaseline:
    """A baseline as kept on disk: the chip's words, when (Unix time), and which chip."""

    baseline: Baseline
    saved_at: float
    serial: str

    def to_json(self) -> dict[str, Any]:
        return {"chip": "SGP30", "serial": self.serial, "eco2": self.baseline.eco2,
                "tvoc": self.baseline.tvoc, "saved_at": self.saved_at,
                "saved_at_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                              time.gmtime(self.saved_at)),
                "reliable": True}


def load_baseline_file(path: Path) -> SavedBaseline:
    """Read a baseline file; FileNotFoundError if absent, ValueError (saying what is wrong)
    if it is not one we wrote."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("chip") != "SGP30":
        raise ValueError("not an SGP30 baseline file")
    eco2, tvoc, at, serial = (doc.get(k) for k in ("eco2", "tvoc", "saved_at", "serial"))
    words_ok = all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= 0xFFFF
                   for w in (eco2, tvoc))
    if not words_ok or not isinstance(serial, str):
        raise ValueError("eco2/tvoc must be 16-bit integers and serial a string")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise ValueError("saved_at must be a Unix time")
    if doc.get("reliable") is not True:
        raise ValueError("baseline not marked reliable (saved before 12 h of operation)")
    b = Baseline(eco2, tvoc)
    if not b.valid:
        raise ValueError("all-zero baseline")
    return SavedBaseline(b, float(at), serial)


def write_baseline_file(path: Path, saved: SavedBaseline) -> None:
    """Atomically and durably (:func:`drivers.files.write_atomic`), so a power cut leaves
    the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(saved.to_json(), indent=1) + "\n")


class SGP30(SingleShotDevice):
    """Host driver for one Sensirion SGP30 (I2C 0x58; implements Device).

    ``bus`` is a bus number (1: header pins 3 and 5), a device path, or an
    smbus2-like object the caller owns (:class:`drivers.emulation.i2c.FakeBus`).
    ``raw_every``: read the raw H2/ethanol signals every N polls (1: every
    poll; 25 ms each). ``baseline_path``: the JSON file the baseline is kept in
    (None: kept in memory only, across re-opens). ``humidity_source``: a callable
    returning the latest (°C, %RH) of a climate sensor, or None when there is
    none; consulted every poll, the chip is sent a new humidity when it changes.
    Failures escalate like the other I2C drivers: ``gone_after`` measurements in
    a row with no answer are :class:`DeviceGone`; a CRC error is a
    :class:`DeviceError`, counted in ``crc_errors``.
    """

    chip = "SGP30"
    QUANTITIES = QUANTITIES

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = c.ADDRESS,
        read_interval_s: float = 1.0,
        quantities: tuple[str, ...] = QUANTITIES,
        raw_every: int = 1,
        baseline_path: str | os.PathLike[str] | None = None,
        humidity_source: HumiditySource | None = None,
        baseline_save_s: float = BASELINE_SAVE_S,
        **options: Unpack[BusOptions],
    ) -> None:
        if address != c.ADDRESS:
            raise ValueError(f"the SGP30's address is fixed at 0x58, not {address:#04x}")
        if raw_every < 1 or baseline_save_s <= 0:
            raise ValueError("raw_every must be >= 1 and baseline_save_s positive")
        super().__init__(bus, address=address, read_interval_s=read_interval_s,
                         quantities=quantities,
                         counters=("readings", "crc_errors", "nacks", "bus_errors",
                                   "warmup_discarded", "humidity_sets", "baseline_saves",
                                   "baseline_restores", "baseline_file_errors"), **options)
        if read_interval_s != 1.0:
            log.warning("SGP30: read_interval_s=%s; the chip's baseline algorithm expects "
                        "measure_iaq every 1 s", read_interval_s)
        self.raw_every = raw_every
        self.baseline_path = Path(baseline_path) if baseline_path is not None else None
        self.humidity_source = humidity_source
        self.baseline_save_s = baseline_save_s
        self.feature_set: FeatureSet | None = None
        self.serial_id: int | None = None
        self.humidity_word: int | None = None  # last sent; None: the chip's default
        self.baseline_restored = False
        self._lock = threading.RLock()
        self._iaq_started: float | None = None
        self._reliable_at = math.inf  # monotonic time the chip's baseline becomes reliable
        self._next_save = math.inf
        self._polls = 0
        self._memory: SavedBaseline | None = None  # the last saved baseline
        self._closing = False
        self._bad_humidity_logged = False

    # -- lifecycle ------------------------------------------------------------------
    def open(self) -> None:
        with self._lock:
            super().open()

    def _setup(self) -> None:
        """Check it is an SGP30, read its serial, start the IAQ algorithm, restore."""
        with self._errors("open", gone_on_nack=True):
            fs = self._query(c.GET_FEATURE_SET, c.decode_feature_set, CRC_RETRIES_ON_OPEN)
        if not fs.is_sgp30:
            raise DeviceError(f"{self.name}: feature set 0x{fs.word:04x} (product type "
                              f"{fs.product_type}, version 0x{fs.version:02x}) is not an "
                              "SGP30's (product type 0, version >= 0x20)")
        self.feature_set = fs
        with self._errors("open"):
            self.serial_id = self._query(c.GET_SERIAL_ID, c.decode_serial_id,
                                         CRC_RETRIES_ON_OPEN)
            self._start_iaq()
        self._polls = 0

    def close(self) -> None:
        """Save the baseline (if reliable and the chip still answers), release the bus."""
        with self._lock:
            if self._bus is not None and not self._closing:
                self._closing = True
                try:
                    self.save_baseline()
                except DeviceError as exc:
                    log.info("%s: baseline not saved at close: %s", self.name, exc)
                finally:
                    self._closing = False
            self._iaq_started = None
            self._close_bus()

    @property
    def warming_up(self) -> bool:
        """The first 15 s after iaq_init: the chip returns a fixed 400 ppm / 0 ppb."""
        started = self._iaq_started
        return started is not None and self._clock() - started < c.WARMUP_S

    @property
    def baseline_reliable(self) -> bool:
        """True once the chip's baseline is worth keeping (restored, or 12 h of running)."""
        return self._iaq_started is not None and self._clock() >= self._reliable_at

    @property
    def serial(self) -> str:
        return f"{self.serial_id:012x}" if self.serial_id is not None else ""

    def _start_iaq(self) -> None:
        """iaq_init, then restore a saved baseline and the humidity (inside _errors)."""
        self._command(c.IAQ_INIT)
        now = self._clock()
        self._iaq_started = now
        self._reliable_at = now + BASELINE_RELIABLE_AFTER_S
        self._next_save = now + self.baseline_save_s
        self.humidity_word = None  # iaq_init does not reset it, but we may face a new chip
        saved = self._restorable()
        self.baseline_restored = False
        if saved is not None:
            self._command(c.SET_IAQ_BASELINE, saved.baseline.tvoc, saved.baseline.eco2)
            self.baseline_restored = True
            self._reliable_at = now
            self.counters["baseline_restores"] += 1
            log.info("%s: baseline restored (eCO2 0x%04x, TVOC 0x%04x, saved %.1f h ago)",
                     self.name, saved.baseline.eco2, saved.baseline.tvoc,
                     (self._wall() - saved.saved_at) / 3600)
        self._apply_humidity()

    def _restorable(self) -> SavedBaseline | None:
        """The stored baseline if it may be restored, else None (and a log line saying why)."""
        where = str(self.baseline_path) if self.baseline_path else "memory"
        if self.baseline_path is None:
            saved = self._memory
        else:
            try:
                saved = load_baseline_file(self.baseline_path)
            except FileNotFoundError:
                saved = None
            except (OSError, ValueError) as exc:
                self.counters["baseline_file_errors"] += 1
                log.warning("%s: baseline file %s is unusable (%s); ignored, the chip learns "
                            "a new baseline (reliable after 12 h)", self.name, where, exc)
                return None
        if saved is None:
            log.info("%s: no stored baseline (%s); the chip learns one, reliable after 12 h",
                     self.name, where)
            return None
        age = self._wall() - saved.saved_at
        if saved.serial != self.serial:
            log.warning("%s: baseline in %s belongs to SGP30 %s, this one is %s; not restored",
                        self.name, where, saved.serial, self.serial)
            return None
        if age > BASELINE_MAX_AGE_S:
            log.warning("%s: baseline in %s is %.1f days old (limit 7); not restored, the chip "
                        "learns a new one (reliable after 12 h)", self.name, where, age / 86400)
            return None
        if age < -CLOCK_SKEW_S:
            log.warning("%s: baseline in %s is dated %.1f h in the future (wrong clock?); "
                        "not restored", self.name, where, -age / 3600)
            return None
        return saved

    # -- sampling -------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        """measure_iaq when due (every second), raw signals every ``raw_every`` polls, then
        the humidity and the hourly baseline save. Readings of the warm-up are discarded."""
        self._need_bus()
        now = self._clock()
        if now < self._next_read:
            self._sleep(min(self._next_read - now, 0.25))
            return []
        self._next_read += self.read_interval_s
        if self._next_read <= now:  # late: no burst to catch up
            self._next_read = now + self.read_interval_s
        with self._lock:
            warm = self.warming_up
            want_raw = (not warm and any(q in RAW_QUANTITIES for q in self.quantities)
                        and self._polls % self.raw_every == 0)
            self._polls += 1
            m = self.measure(raw=want_raw)
            self._housekeeping()
        if warm:
            self.counters["warmup_discarded"] += 1
            return []
        values = {q: float(v) for q in self.quantities
                  if (v := getattr(m, q)) is not None}
        return [Reading(values, self._clock(), self._wall())] if values else []

    def measure(self, raw: bool = True) -> Measurement:
        """measure_iaq now (and measure_raw_signals if ``raw``): about 12 (+25) ms."""
        with self._lock:
            self._need_bus()
            with self._errors("measurement"):
                aq: AirQuality = self._query(c.MEASURE_IAQ, c.decode_air_quality)
                rs: RawSignals | None = (self._query(c.MEASURE_RAW, c.decode_raw_signals)
                                         if raw else None)
            self.counters["readings"] += 1
            return Measurement(aq.eco2, aq.tvoc, rs.h2 if rs else None,
                               rs.ethanol if rs else None)

    def _housekeeping(self) -> None:
        """Humidity and the hourly baseline save: a failure here is logged, not fatal
        (the measurement already succeeded); a vanished chip still is."""
        try:
            self._apply_humidity()
            if self._clock() >= self._next_save:
                self._next_save = self._clock() + self.baseline_save_s
                self.save_baseline()
        except DeviceGone:
            raise
        except DeviceError as exc:
            log.warning("%s: %s", self.name, exc)

    # -- humidity compensation ------------------------------------------------------
    def _apply_humidity(self) -> None:
        if self.humidity_source is None:
            return
        try:
            latest = self.humidity_source()
        except Exception:  # the hook belongs to the daemon: never let it stop sampling
            log.exception("%s: humidity_source failed", self.name)
            return
        if latest is None:
            return
        try:
            word = c.humidity_word(c.absolute_humidity(*latest))
        except (TypeError, ValueError) as exc:
            if not self._bad_humidity_logged:
                self._bad_humidity_logged = True
                log.warning("%s: humidity_source gave %r: %s", self.name, latest, exc)
            return
        if word != self.humidity_word:
            self._send_humidity(word)

    def set_humidity(self, temp_c: float, rh_pct: float) -> int:
        """Compensate for this air's humidity (from an SHT3x/BME280 next to the SGP30);
        returns the 8.8 fixed-point word sent."""
        word = c.humidity_word(c.absolute_humidity(temp_c, rh_pct))
        self._send_humidity(word)
        return word

    def set_absolute_humidity(self, g_m3: float) -> int:
        """Absolute humidity in g/m³; 0 switches compensation off."""
        word = c.humidity_word(g_m3)
        self._send_humidity(word)
        return word

    def _send_humidity(self, word: int) -> None:
        with self._lock:
            self._need_bus()
            with self._errors("set humidity"):
                self._command(c.SET_ABSOLUTE_HUMIDITY, word)
            self.humidity_word = word
            self.counters["humidity_sets"] += 1

    # -- the baseline ---------------------------------------------------------------
    def get_baseline(self) -> Baseline:
        """The chip's current baseline (eCO2 word, TVOC word)."""
        with self._lock:
            self._need_bus()
            with self._errors("get baseline"):
                return self._query(c.GET_IAQ_BASELINE, c.decode_baseline)

    def set_baseline(self, baseline: Baseline) -> None:
        """Write a baseline (only one read from this chip, younger than 7 days)."""
        data = c.set_iaq_baseline(baseline)  # validates
        with self._lock:
            self._need_bus()
            with self._errors("set baseline"):
                self._write(data)
                self._sleep(c.COMMANDS[c.SET_IAQ_BASELINE].duration_s + MARGIN_S)

    def save_baseline(self) -> SavedBaseline | None:
        """Read the baseline and store it, if it is reliable yet; returns what was stored.

        A file that cannot be written is logged and counted, not raised: the chip is fine.
        """
        with self._lock:
            if self._bus is None or not self.baseline_reliable:
                return None
            b = self.get_baseline()
            if not b.valid:
                return None
            saved = SavedBaseline(b, self._wall(), self.serial)
            self._memory = saved
            if self.baseline_path is not None:
                try:
                    write_baseline_file(self.baseline_path, saved)
                except OSError as exc:
                    self.counters["baseline_file_errors"] += 1
                    log.warning("%s: cannot write baseline file %s: %s", self.name,
                                self.baseline_path, exc)
                    return None
            self.counters["baseline_saves"] += 1
            return saved

    # -- other commands ---------------------------------------------------------------
    def self_test(self) -> bool:
        """measure_test (220 ms): True if the chip answers 0xD400. It stops the IAQ
        algorithm, so the driver then restarts it (a new 15 s warm-up, baseline restored)."""
        with self._lock:
            self._need_bus()
            if self._iaq_started is not None:
                self.save_baseline()
            with self._errors("self-test"):
                word = self._query(c.MEASURE_TEST, c.decode_test_result)
                self._start_iaq()
            return word == c.MEASURE_TEST_OK

    # -- I/O ------------------------------------------------------------------------
    def _command(self, code: int, *args: int) -> None:
        """A command without reply, then its execution time."""
        self._write(c.command(code, *args))
        self._sleep(c.COMMANDS[code].duration_s + MARGIN_S)

    def _query(self, code: int, decode: Callable[[bytes], T], crc_retries: int = 0) -> T:
        """Command, wait, read the reply and decode it; a CRC error is retried
        ``crc_retries`` times (counted each time), then raised."""
        info = c.COMMANDS[code]
        for attempt in range(crc_retries + 1):
            self._write(c.command(code))
            self._sleep(info.duration_s + MARGIN_S)
            raw = self._read_retrying(3 * info.reply)
            try:
                return decode(raw)
            except CRCError:
                if attempt == crc_retries:
                    raise  # counted by _errors
                self.counters["crc_errors"] += 1
        raise AssertionError("unreachable")
