"""Propagation: run new threads and executor work in a copy of the caller's context.

This is what Python 3.14's ``thread_inherit_context`` and ``asyncio.to_thread``
do: a ``Thread`` started inside a span runs in that span, and so does a task
submitted to a ``ThreadPoolExecutor`` (hence ``loop.run_in_executor``). Pool
worker threads themselves start with an empty context: each work item brings
its own. Installing twice is a no-op; ``uninstall`` restores the originals.
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["install", "installed", "uninstall"]

# What was there when we installed (possibly another instrumentation's wrapper,
# which we call through rather than bypass).
_original_start: Callable[[threading.Thread], None] = threading.Thread.start
_original_submit: Callable[..., Future] = ThreadPoolExecutor.submit


def _start(self: threading.Thread) -> None:
    if "run" not in self.__dict__:
        worker = sys.modules.get("concurrent.futures.thread")
        pool_worker = worker is not None and getattr(self, "_target", None) is getattr(
            worker, "_worker", None
        )
        context = contextvars.Context() if pool_worker else contextvars.copy_context()
        run = self.run  # the subclass's run(), if it overrides it

        def run_in_context() -> None:
            try:
                context.run(run)
            finally:
                self.__dict__.pop("run", None)  # don't keep the context alive

        self.run = run_in_context  # type: ignore[method-assign]
    _original_start(self)


def _submit(
    self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Future:
    return _original_submit(self, contextvars.copy_context().run, fn, *args, **kwargs)


_start.__spanprof__ = True  # type: ignore[attr-defined]
_submit.__spanprof__ = True  # type: ignore[attr-defined]


def _wraps(func: Any, target: Any) -> bool:
    """Whether ``target`` is ``func`` or somewhere in its ``__wrapped__`` chain."""
    for _ in range(32):
        if func is target:
            return True
        func = getattr(func, "__wrapped__", None)
        if func is None:
            return False
    return False


def installed() -> bool:
    return _wraps(threading.Thread.start, _start)


def install() -> None:
    """Patch ``Thread.start`` and ``ThreadPoolExecutor.submit``; idempotent."""
    global _original_start, _original_submit
    if not _wraps(threading.Thread.start, _start):
        _original_start = threading.Thread.start
        threading.Thread.start = _start  # type: ignore[method-assign]
    if not _wraps(ThreadPoolExecutor.submit, _submit):
        _original_submit = ThreadPoolExecutor.submit
        ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign]


def uninstall() -> None:
    """Restore the originals, if they are still ours (someone may have wrapped them since)."""
    if threading.Thread.start is _start:
        threading.Thread.start = _original_start  # type: ignore[method-assign]
    if ThreadPoolExecutor.submit is _submit:
        ThreadPoolExecutor.submit = _original_submit  # type: ignore[method-assign]
