"""Running child processes as one unit: prefixed logs, readiness, crash reports, clean shutdown.

Children run in their own process groups (a Ctrl-C reaches only the supervisor, which then stops
them in order) and die with the supervisor even if it is killed (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the supervisor's shutdown still stops children
        pass


@dataclass
class Child:
    """One supervised process."""

    name: str
    command: Sequence[str]
    env: dict[str, str] | None = None
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    _log_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """Starts children, prefixes their output, reports unexpected exits, stops them all."""

    def __init__(self, log: Callable[[str], None] | None = None, pid_dir: Path | None = None,
                 line_format: Callable[[str, str], str] | None = None) -> None:
        self.children: list[Child] = []
        self.pid_dir = pid_dir
        self.stopping = False
        self._log = log or (lambda line: print(line, flush=True))
        self._width = 8
        self._exit_watchers: list[asyncio.Task[None]] = []
        self.crashed: list[Child] = []
        #: (process name, line) → the line to log; default: the name padded, ``|``, the line.
        self._format = line_format or (lambda name, line: f"{name:<{self._width}} | {line}")

    def say(self, message: str) -> None:
        self._log(self._format("up", message))

    async def start(self, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name=name, command=list(command), env=env)
        self._width = max(self._width, len(name))
        child.process = await asyncio.create_subprocess_exec(
            *child.command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        child.started_at = time.monotonic()
        if self.pid_dir:
            (self.pid_dir / f"{name}.pid").write_text(f"{child.process.pid}\n")
        child._log_task = asyncio.create_task(self._relay_output(child))
        self._exit_watchers.append(asyncio.create_task(self._watch_exit(child)))
        self.children.append(child)
        return child

    async def _relay_output(self, child: Child) -> None:
        assert child.process and child.process.stdout
        while line := await child.process.stdout.readline():
            self._log(self._format(child.name, line.decode(errors="replace").rstrip()))

    async def _watch_exit(self, child: Child) -> None:
        assert child.process
        code = await child.process.wait()
        if child._log_task:
            await asyncio.gather(child._log_task, return_exceptions=True)
        if not self.stopping:
            self.crashed.append(child)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
            self.say(f"{child.name} exited unexpectedly with {how}; it is not restarted")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every child, newest first; SIGKILL what is still alive after ``timeout_s``."""
        self.stopping = True
        for child in reversed(self.children):
            if child.running:
                _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in reversed(self.children):
            if not child.process:
                continue
            try:
                await asyncio.wait_for(child.process.wait(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                self.say(f"{child.name} did not stop within {timeout_s:g}s; killing it")
                _signal_group(child, signal.SIGKILL)
                await child.process.wait()
        await asyncio.gather(*self._exit_watchers, return_exceptions=True)


def _signal_group(child: Child, sig: signal.Signals) -> None:
    assert child.process
    try:
        os.killpg(child.process.pid, sig)
    except ProcessLookupError:
        pass


async def wait_until(
    check: Callable[[], Awaitable[bool]],
    timeout_s: float,
    what: str,
    alive: Callable[[], bool] = lambda: True,
    interval_s: float = 0.1,
) -> None:
    """Poll ``check`` until it is true; TimeoutError after ``timeout_s``, RuntimeError if ``alive`` fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not alive():
            raise RuntimeError(f"{what}: the process exited before it was ready")
        try:
            if await check():
                return
        except Exception:  # not up yet: connection refused, half-started server...
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout_s:g}s")
        await asyncio.sleep(interval_s)


def python_module_command(module: str, *args: str) -> list[str]:
    """Run ``python -m module args`` with this interpreter, unbuffered."""
    return [sys.executable, "-u", "-m", module, *args]
