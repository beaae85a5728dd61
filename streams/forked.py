"""Computing an answer in a forked child: a snapshot of the KPI state, off the event loop.

Why: an answer (the report, the metrics exposition, the wallboard's document) must see the
shards between two apply rounds, never half-way through one, so it used to be computed on the
event loop that applies them; with millions of events in the current windows that blocked the
loop for seconds per answer (the soak in docs/benchmarks.md), holding up the apply stage, the
other requests and the consumer's heartbeats alike. ``os.fork()`` gives the child the state
exactly as it is between two rounds, copy-on-write, in tens of milliseconds (about 25 ms for
half a gigabyte here); the child computes and writes the answer's bytes to a pipe while the
parent goes on applying. What it costs: the pages the child touches are copied (reading an
object writes its reference count): measured +361 MiB for a 535 MiB worker, for as long as the
child runs, and one child at a time (:class:`streams.answers.SharedAnswers`).

Why this is safe in a process with threads (RocksDB's, the web server's executor): the child
runs nothing but the computation, on objects only the event loop's thread mutates, and leaves
with ``os._exit`` (no atexit, no finalizers, no flush of inherited sockets); it never touches
a lock another thread may have held at the fork (glibc's allocator is reset for the child).
Its signals are reset first: a signal arriving in the child must kill the child, not be
written to the parent's event-loop wake-up socket, which it shares.
"""

from __future__ import annotations

import asyncio
import os
import signal
import traceback
from collections.abc import Callable

#: Whether this platform can fork (POSIX); elsewhere answers are computed in the process.
AVAILABLE = hasattr(os, "fork")
#: An answer that takes longer than this is abandoned (its child killed).
TIMEOUT_SECONDS = 300.0

_OK, _FAILED = b"0", b"1"


class ForkedError(RuntimeError):
    """The child failed to compute the answer (its traceback is the message)."""


async def run_forked(compute: Callable[[], bytes], timeout: float = TIMEOUT_SECONDS) -> bytes:
    """``compute()`` evaluated in a forked child on a snapshot of this process; its bytes.

    Must be called from the event loop's thread, between two mutations of the state (as any
    coroutine step is). Raises :class:`ForkedError` if the child fails, :class:`TimeoutError`
    if it takes longer than ``timeout`` (the child is killed).
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, write, leave; never return into the parent's code
        code = 1
        try:
            _reset_signals()
            os.close(read_fd)
            try:
                body = _OK + compute()
            except BaseException:  # noqa: BLE001 - reported to the parent, whatever it is
                body = _FAILED + traceback.format_exc().encode("utf-8", "replace")
            view = memoryview(body)
            while view:
                view = view[os.write(write_fd, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            while True:
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    if not done.done():
                        done.set_result(None)
                    return
                chunks.append(chunk)
        except BlockingIOError:
            return
        except OSError as exc:
            if not done.done():
                done.set_exception(exc)

    loop.add_reader(read_fd, readable)
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except BaseException:
        _kill(pid)
        raise
    finally:
        loop.remove_reader(read_fd)
        os.close(read_fd)
        await _reap(pid)
    body = b"".join(chunks)
    if body[:1] == _OK:
        return body[1:]
    if body[:1] == _FAILED:
        raise ForkedError(body[1:].decode("utf-8", "replace"))
    raise ForkedError("the child computing the answer died without one")


def _reset_signals() -> None:
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:  # not the main thread: no wake-up fd was set from here
        pass
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                   signal.SIGUSR2, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def _reap(pid: int) -> None:
    """Collect the child's exit status without blocking the loop (it exits right after its
    last write, so this takes a few polls at most)."""
    delay = 0.001
    while True:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else (a SIGCHLD handler)
            return
        if done:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
