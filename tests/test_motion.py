"""drivers.emulation.motion: numpy-free motion sources for the emulated accelerometers.

The resampler is checked against the numpy code it replaced (kept here as the reference),
so a SisFall replay gives the chips the same values as before."""

from __future__ import annotations

import statistics
import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from drivers.emulation.motion import (
    SISFALL_G_PER_COUNT,
    RestSource,
    Rows,
    SisFallSource,
    resample,
    sisfall_available,
    source_from_spec,
)

try:
    import numpy as np
except ImportError:
    np = None

ROOT = Path(__file__).resolve().parent.parent
needs_numpy = pytest.mark.skipif(np is None, reason="numpy not installed (the reference)")
needs_sisfall = pytest.mark.skipif(not sisfall_available(),
                                   reason="SisFall data absent (/work/shared/data/sisfall)")
#: Every ADXL345 rate code, the MPU-6050 driver rates and a few odd MPU-6050 divider rates.
RATES = sorted({3200.0 / 2 ** (15 - c) for c in range(16)}
               | {10.0, 20.0, 25.0, 40.0, 50.0, 100.0, 125.0, 200.0, 250.0, 500.0, 1000.0}
               | {1000.0 / 6, 1000.0 / 3, 8000.0 / 9, 1000.0 / 7, 1000.0 / 13})


def test_the_emulators_do_not_import_numpy():
    """The daemon runs these (bus = "emulator", the memory benchmark): numpy is ~15 MiB."""
    code = ("import drivers.adxl345.emulator, drivers.mpu6050.emulator, "
            "drivers.emulation.motion, drivers.emulation.i2c, drivers.adxl345, "
            "drivers.mpu6050, drivers.families.accel, drivers.families.accel_fifo, sys\n"
            "assert 'numpy' not in sys.modules, sorted(m for m in sys.modules if 'numpy' in m)\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def numpy_resample(g, from_hz, to_hz):
    """The numpy implementation the pure-Python one replaced, verbatim."""
    g = np.asarray(g, dtype=float)
    if to_hz == from_hz:
        return g.copy()
    width = round(from_hz / to_hz)
    if width > 1:
        kernel = np.ones(width) / width
        pad = np.pad(g, ((width // 2, width - 1 - width // 2), (0, 0)), mode="edge")
        g = np.stack([np.convolve(pad[:, k], kernel, mode="valid") for k in range(3)], axis=1)
    t_in = np.arange(len(g)) / from_hz
    n_out = max(1, int(np.floor(t_in[-1] * to_hz)) + 1)
    t_out = np.arange(n_out) / to_hz
    return np.stack([np.interp(t_out, t_in, g[:, k]) for k in range(3)], axis=1)


def walk(n: int, seed: int = 3) -> array:
    """SisFall-like int16 counts: a random walk with an impact, x/y/z interleaved."""
    import random

    rng = random.Random(seed)
    out, pos = array("h"), [0, -256, 30]
    for i in range(n):
        for k in range(3):
            pos[k] = max(-4096, min(4095, pos[k] + rng.randint(-40, 40)
                                   + (1500 if i == n // 2 and k == 1 else 0)))
        out.extend(pos)
    return out


def as_numpy(rows: Rows):
    return np.frombuffer(rows.data, dtype=rows.data.typecode).reshape(-1, 3)


# -- Rows ----------------------------------------------------------------------------------
def test_rows_is_a_compact_sequence_of_xyz():
    r = Rows(array("d", [1, 2, 3, 4, 5, 6, 7, 8, 9]))
    assert len(r) == 3 and r[0] == (1.0, 2.0, 3.0) and r[-1] == (7.0, 8.0, 9.0)
    assert list(r) == [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (7.0, 8.0, 9.0)]
    assert r[1:] == Rows(array("d", [4, 5, 6, 7, 8, 9])) and r[::2][1] == (7.0, 8.0, 9.0)
    assert r.column(1) == array("d", [2, 5, 8])
    assert Rows.of([(1, 2, 3)]) == Rows(array("d", [1, 2, 3]))
    with pytest.raises(IndexError):
        r[3]
    with pytest.raises(ValueError, match="rows of 3"):
        Rows(array("d", [1, 2]))


# -- resampling ------------------------------------------------------------------------------
@needs_numpy
@pytest.mark.parametrize("rate", RATES)
def test_resample_gives_what_numpy_gave(rate):
    counts = Rows(walk(1501))
    got = resample(counts, 200.0, rate, scale=SISFALL_G_PER_COUNT)
    want = numpy_resample(as_numpy(counts) * SISFALL_G_PER_COUNT, 200.0, rate)
    assert got.data.typecode == "d" and len(got) == len(want)  # same count at every rate
    width = round(200.0 / rate)
    if width < 12 or width & (width - 1) == 0:
        # the same operations in the same order: bit for bit
        assert as_numpy(got).tolist() == want.tolist()
    else:
        # numpy's BLAS dot product sums a window of 12+ in its own order: the last bit differs
        assert np.allclose(as_numpy(got), want, rtol=0, atol=1e-14)


@needs_numpy
def test_resample_of_float_rows():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((97, 3))
    for rate in (50.0, 200.0, 333.0, 800.0):
        got = resample([tuple(r) for r in g.tolist()], 200.0, rate)
        assert np.allclose(as_numpy(got), numpy_resample(g, 200.0, rate), rtol=0, atol=1e-12)


def test_resample_edge_cases():
    one = Rows(array("h", [1, 2, 3]))
    assert list(resample(one, 200.0, 50.0)) == [(1.0, 2.0, 3.0)]
    assert list(resample(one, 200.0, 800.0)) == [(1.0, 2.0, 3.0)]
    with pytest.raises(ValueError, match="nothing"):
        resample(Rows(array("d")), 200.0, 50.0)


# -- sources -------------------------------------------------------------------------------
def test_rest_source_without_noise_is_exactly_gravity():
    rows = RestSource((0.0, -1.0, 0.0), noise_g=0, seconds=2.0).samples(100.0)
    assert len(rows) == 200 and set(rows) == {(0.0, -1.0, 0.0)}


def test_rest_source_noise_is_seeded_gaussian():
    src = RestSource(noise_g=0.01, seed=5)
    rows = src.samples(200.0)
    assert len(rows) == 4000 and rows.data.typecode == "d"
    assert rows == src.samples(200.0) and rows != RestSource(noise_g=0.01, seed=6).samples(200.0)
    for axis, g in enumerate((0.0, 0.0, 1.0)):
        col = rows.column(axis)
        assert abs(statistics.fmean(col) - g) < 0.001  # 4 standard errors
        assert abs(statistics.pstdev(col) - 0.01) < 0.0006
    inside = sum(abs(v - 1.0) < 0.01 for v in rows.column(2)) / len(rows)
    assert 0.65 < inside < 0.72  # 68 % within one sigma: normal, not uniform
    assert len(RestSource(seconds=0.001).samples(12.5)) == 1


@needs_numpy
def test_sisfall_source_reads_one_trial_compactly(tmp_path):
    a, b = walk(400), walk(300, seed=4)
    np.savez_compressed(tmp_path / "SA01.npz",
                        F01_R01=np.frombuffer(a, dtype="<i2").reshape(-1, 3),
                        D01_R01=np.frombuffer(b, dtype="<i2").reshape(-1, 3))
    src = SisFallSource("SA01", "F01_R01", directory=tmp_path)
    assert src.counts.data == a and src.counts.data.typecode == "h"
    assert src.duration_s == 2.0
    assert list(src.g) == [tuple(c * 32 / 8192 for c in row) for row in src.counts]
    assert src.samples(50.0) is src.samples(50.0)  # resampled once per rate
    with pytest.raises(KeyError, match="no trial 'F02_R01'"):
        SisFallSource("SA01", "F02_R01", directory=tmp_path)
    assert isinstance(source_from_spec("sisfall:SA01/F02_R01", directory=tmp_path), RestSource)


@needs_numpy
@needs_sisfall
def test_sisfall_source_matches_numpy_load():
    src = SisFallSource("SA01", "F05_R01")
    with np.load(src.path) as data:
        want = data["F05_R01"]
    assert as_numpy(src.counts).tolist() == want.tolist()
    assert as_numpy(src.samples(200.0)).tolist() == (want * SISFALL_G_PER_COUNT).tolist()
