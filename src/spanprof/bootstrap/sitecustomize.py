"""Starts spanprof in Python processes launched under ``spanprof run``.

``spanprof run`` puts this directory first on PYTHONPATH and sets
SPANPROF_AUTOSTART=1; the config comes from the SPANPROF_* variables. Whatever
happens here must never break the host program, and importing it must stay cheap:
it runs at the start of every Python process the profiled program launches.
"""

import os
import sys


def _chain() -> None:
    """Import the sitecustomize this one hides: the next one on sys.path after this dir.

    As ddtrace-run does: import it again with this dir off sys.path, so it is found,
    named and cached as Python would have; only os and sys are needed for that.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    ours = sys.modules.pop("sitecustomize", None)
    sys.path[:] = [p for p in saved if os.path.abspath(p or os.curdir) != here]
    without_us = sys.path[:]
    try:
        import sitecustomize  # type: ignore[import-not-found]  # noqa: F401  (the next one)
    except ModuleNotFoundError as exc:
        if exc.name != "sitecustomize":
            _report_site_error(exc)
    except Exception as exc:  # report it as site.py would have, then carry on
        _report_site_error(exc)
    finally:
        if "sitecustomize" not in sys.modules and ours is not None:
            sys.modules["sitecustomize"] = ours
        if sys.path == without_us:
            sys.path[:] = saved
        else:  # the chained one changed sys.path: keep its changes
            sys.path[:0] = [p for p in saved if p not in sys.path]


def _report_site_error(exc: Exception) -> None:
    if sys.flags.verbose:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    else:
        message = f"{type(exc).__name__}: {exc}"
        print(
            f"Error in sitecustomize; set PYTHONVERBOSE for traceback:\n{message}", file=sys.stderr
        )


def _autostart() -> None:
    try:
        import spanprof

        spanprof.start()  # stopped and flushed by its own atexit hook
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__  # one line
        print(f"spanprof: not started: {reason}", file=sys.stderr)


_chain()  # first: the chained one may set up paths or variables the profiler needs
if os.environ.get("SPANPROF_AUTOSTART") == "1":
    _autostart()
