"""Propagation of the caller's context into threads and thread-pool work."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from spanprof import propagation

VAR: contextvars.ContextVar[str] = contextvars.ContextVar("propagation_test", default="unset")


@pytest.fixture
def propagating() -> Iterator[None]:
    assert not propagation.installed()
    propagation.install()
    try:
        yield
    finally:
        propagation.uninstall()
    assert not propagation.installed()


def seen_in_thread(thread_factory) -> str:
    seen: list[str] = []
    VAR.set("caller")
    t = thread_factory(lambda: seen.append(VAR.get()))
    t.start()
    t.join()
    return seen[0]


class Subclass(threading.Thread):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def run(self) -> None:
        self.fn()


def run_in_fresh_context(fn):
    return contextvars.Context().run(fn)


def test_threads_inherit_the_callers_context(propagating) -> None:
    assert run_in_fresh_context(lambda: seen_in_thread(lambda f: threading.Thread(target=f)))
    assert run_in_fresh_context(lambda: seen_in_thread(Subclass)) == "caller"
    assert run_in_fresh_context(lambda: seen_in_thread(lambda f: threading.Thread(target=f))) == (
        "caller"
    )


def test_without_propagation_threads_start_empty() -> None:
    assert run_in_fresh_context(lambda: seen_in_thread(lambda f: threading.Thread(target=f))) == (
        "unset"
    )


def test_pool_work_runs_in_the_submitters_context(propagating) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: None).result()  # the worker exists before the values are set

        def submit_with(value: str) -> list[str]:
            VAR.set(value)
            return [
                pool.submit(VAR.get).result(),
                next(iter(pool.map(lambda _: VAR.get(), [0]))),
            ]

        assert contextvars.Context().run(submit_with, "one") == ["one", "one"]
        assert contextvars.Context().run(submit_with, "two") == ["two", "two"]
        # between work items the worker is back in its own, empty context
        assert pool.submit(lambda: None).result() is None


def test_pool_workers_do_not_inherit_the_first_submitters_context(propagating) -> None:
    def worker_context() -> contextvars.Context:
        VAR.set("first submitter")
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(lambda: None).result()
            worker = next(iter(pool._threads))  # type: ignore[attr-defined]
            cells = [c.cell_contents for c in worker.run.__closure__]
            (context,) = [c for c in cells if isinstance(c, contextvars.Context)]
            return context

    # the idle worker thread runs in an empty context, not a copy of the submitter's
    context = contextvars.Context().run(worker_context)
    assert VAR not in context
    assert len(context) == 0


def test_install_is_idempotent_and_uninstall_restores(propagating) -> None:
    start, submit = threading.Thread.start, ThreadPoolExecutor.submit
    propagation.install()
    assert (threading.Thread.start, ThreadPoolExecutor.submit) == (start, submit)


def test_coexists_with_opentelemetry_instrumentation_threading(propagating) -> None:
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    instrumentor = ThreadingInstrumentor()
    instrumentor.instrument()
    try:
        propagation.install()  # again, over their wrappers: must not remove them
        assert propagation.installed()
        assert hasattr(threading.Thread.start, "__wrapped__")  # theirs is still there
        assert (
            run_in_fresh_context(lambda: seen_in_thread(lambda f: threading.Thread(target=f)))
            == "caller"
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            VAR.set("pool")
            assert pool.submit(VAR.get).result() == "pool"
    finally:
        instrumentor.uninstrument()
    assert propagation.installed()
