"""A fork server for tests/test_cli_fuzz.py: ``citynode`` commands in forked children of
one warm interpreter, each with its own files, limits and timeout.

Starting ``python -m agent`` costs 0.1 to 0.5 s per command (numpy, the model runtime,
msgspec, the catalogue); forking an interpreter that has imported them already costs a
few milliseconds, so the fuzz suite can afford hundreds of cases in CI. Each child is a
real process: its own session and process group (killed as a group on a timeout), an
address-space limit (set on this server by the test's ``preexec_fn`` and again on each
child), a file-size limit, standard input from ``/dev/null`` (or a file, or closed),
standard output and error to files, the environment it is given, and the ordinary end of
an interpreter (``sys.exit``: atexit handlers, non-daemon threads joined). An exception
that escapes :func:`agent.tools.cli.main` is printed as the interpreter would print it.

Protocol: one JSON request per line on the file descriptor named by ``argv[1]``, one JSON
answer per line on ``argv[2]``; the server runs one child at a time.

Request: ``argv``, ``cwd``, ``env`` (the whole environment), ``stdin`` (a path, or
``null`` for no standard input at all), ``stdout``, ``stderr`` (paths), ``timeout`` (s),
optional ``interrupt_after`` (s) and ``interrupt_signal`` (a number): ask it to stop as a
person or systemd would, then give it ``grace`` seconds more.

Answer: ``code`` (exit status, or None), ``signal`` (the signal that ended it, or None),
``timed_out``, ``interrupted``, ``elapsed`` (s), ``maxrss_kb`` (the child's peak resident
set, which includes what it shares with this server: compare with ``base_rss_kb`` from the
greeting line).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback

#: Modules every child would import anyway; loaded once here, shared copy-on-write.
PRELOAD = (
    "agent.tools.cli", "agent.core.config", "agent.core.daemon", "agent.core.sensors",
    "agent.tools.replay.common", "agent.wire.formats", "agent.wire.model", "drivers.catalogue",
    "drivers.registry", "msgspec", "numpy", "paho.mqtt.client",
)
AS_LIMIT = 1 << 30  # 1 GiB of address space
FSIZE_LIMIT = 256 << 20  # no file (an output, a spool) beyond 256 MiB
_PROTOCOL_FDS: list[int] = []  # this server's pipes: a child closes them


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    from agent.tools.cli import build_parser
    from drivers import catalogue

    build_parser()
    catalogue.specs()


def _child(req: dict) -> None:
    """In the forked child: become the command. Never returns."""
    code = 70
    try:
        for fd in _PROTOCOL_FDS:
            os.close(fd)
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        if req.get("stdin") is None:
            os.close(0)
            sys.stdin = None  # type: ignore[assignment]  # as Python starts with fd 0 closed
        else:
            fd = os.open(req["stdin"], os.O_RDONLY)
            os.dup2(fd, 0)
            os.close(fd)
        sys.argv = ["citynode", *req["argv"]]
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from agent.tools.cli import main

        code = main(req["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    try:
        sys.exit(code)  # the interpreter's own end: atexit, non-daemon threads, flushes
    finally:
        os._exit(code if isinstance(code, int) else 1)


def _run(req: dict) -> dict:
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(req)
    interrupt_at = req.get("interrupt_after")
    deadline = t0 + req["timeout"]
    interrupted = timed_out = False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        now = time.monotonic()
        if interrupt_at is not None and not interrupted and now - t0 >= interrupt_at:
            interrupted = True
            try:
                os.killpg(pid, req.get("interrupt_signal", signal.SIGINT))
            except ProcessLookupError:
                pass
            deadline = max(deadline, now + req.get("grace", 20.0))
        if now >= deadline:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.005 if now - t0 < 0.5 else 0.02)
    elapsed = time.monotonic() - t0
    try:  # what the command left running in its group (not in sessions of its own)
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return {
        "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": timed_out, "interrupted": interrupted, "elapsed": round(elapsed, 3),
        "maxrss_kb": usage.ru_maxrss,
    }


def main() -> None:
    rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
    _PROTOCOL_FDS.extend((rfd, wfd))
    _preload()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with os.fdopen(rfd, "r") as requests, os.fdopen(wfd, "w") as answers:
        answers.write(json.dumps({"ready": True, "base_rss_kb": rss}) + "\n")
        answers.flush()
        for line in requests:
            answers.write(json.dumps(_run(json.loads(line))) + "\n")
            answers.flush()


if __name__ == "__main__":
    main()
