"""The doctor's findings (:class:`Check`) and how checks run: each on its own thread,
within its own time limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CHECKS = ("config", "i2c", "serial", "gpio", "broker", "clock", "disk", "journal")
DEFAULT_LISTEN_S = 3.0
CONNECT_TIMEOUT_S = 5.0
CERT_WARN_DAYS = 30
MIN_YEAR = 2024


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: which check, on what, the verdict, why, and (WARN/FAIL) the fix."""

    name: str
    target: str
    status: str
    detail: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)



# -- running checks ------------------------------------------------------------------------
@dataclass
class Task:
    """A check to run on its own thread: rows from ``run``, within ``timeout_s``."""

    name: str
    target: str
    run: Callable[[], Iterable[Check]]
    timeout_s: float


def run_tasks(tasks: Sequence[Task]) -> list[Check]:
    """Run every task concurrently; rows come back in task order.

    A task that overruns its time limit keeps the rows it had produced and gets a
    FAIL row; its thread is abandoned (a daemon thread: it cannot hold the exit).
    """
    results: list[list[Check]] = [[] for _ in tasks]
    threads: list[threading.Thread] = []

    def work(task: Task, out: list[Check]) -> None:
        try:
            for row in task.run():
                out.append(row)
        except Exception as exc:  # one check's bug must not end the run
            out.append(Check(task.name, task.target, FAIL,
                             f"check crashed: {type(exc).__name__}: {exc}",
                             "a bug in citynode doctor: please report this line"))

    start = time.monotonic()
    for task, out in zip(tasks, results, strict=True):
        t = threading.Thread(target=work, args=(task, out), daemon=True,
                             name=f"doctor:{task.name}:{task.target}")
        t.start()
        threads.append(t)
    rows: list[Check] = []
    for task, out, t in zip(tasks, results, threads, strict=True):
        t.join(max(0.0, start + task.timeout_s - time.monotonic()))
        got = list(out)
        if t.is_alive():
            got.append(Check(task.name, task.target, FAIL,
                             f"no result within {task.timeout_s:g} s (check abandoned)",
                             "the device or service hangs: power-cycle it and run doctor "
                             "again"))
        rows += got
    return rows
