"""Cancellation scopes: one mechanism for SIGINT, `ansflow cancel`, `--fail-fast` and timeouts.

A run owns a root scope; each step attempt gets a child scope. Whatever has to be stopped when a
step ends early (a local process group, a remote process group, a Jenkins build) registers a
callback on the step's scope, so the executor never needs to know what kind of work it stops.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

CANCEL = "cancel"
TIMEOUT = "timeout"


class CancelScope:
    """A cancellable unit of work; cancelling a scope cancels its children too."""

    def __init__(self, parent: CancelScope | None = None) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._callbacks: dict[int, Callable[[str], None]] = {}
        self._children: set[CancelScope] = set()
        self._next = 0
        self.reason: str | None = None
        self._parent = parent
        if parent is not None:
            parent._adopt(self)

    def _adopt(self, child: CancelScope) -> None:
        with self._lock:
            cancelled, reason = self._event.is_set(), self.reason
            if not cancelled:
                self._children.add(child)
        if cancelled:
            child.cancel(reason or CANCEL)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = CANCEL) -> None:
        """Cancel once; later calls are no-ops so the first reason (timeout or cancel) sticks."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks.values())
            children = list(self._children)
        for child in children:
            child.cancel(reason)
        for callback in callbacks:
            # NOTE: a failing stopper must not keep the others from running.
            try:
                callback(reason)
            except Exception:
                pass

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until cancelled or `timeout` passes; True when cancelled. Use instead of sleep."""
        return self._event.wait(timeout)

    @contextmanager
    def on_cancel(self, callback: Callable[[str], None]) -> Iterator[None]:
        """Run `callback(reason)` if the scope is cancelled during the block (or already was)."""
        with self._lock:
            key = self._next
            self._next += 1
            self._callbacks[key] = callback
            already = self._event.is_set()
        if already:
            callback(self.reason or CANCEL)
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.pop(key, None)

    def close(self) -> None:
        """Detach from the parent so finished steps do not accumulate in the run's scope."""
        if self._parent is not None:
            with self._parent._lock:
                self._parent._children.discard(self)

    def start_timer(self, seconds: float | None) -> threading.Timer | None:
        """Cancel this scope with reason `timeout` after `seconds`; the caller cancels the timer."""
        if seconds is None:
            return None
        timer = threading.Timer(seconds, self.cancel, args=(TIMEOUT,))
        timer.daemon = True
        timer.start()
        return timer


class StopSignals:
    """Counts SIGINT and SIGTERM (Ctrl-C, `ansflow cancel`) while a run owns the process.

    The handler only counts: the run's loop looks at `count` between two pieces of work and
    cancels from there, so a signal never runs cancellation code while the interrupted thread
    holds one of its locks. Outside the main thread (a library caller) nothing is installed.
    """

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self.count += 1
