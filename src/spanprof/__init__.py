"""spanprof: a continuous profiler that links every sample to its OpenTelemetry span.

The public API is small: :func:`start`, :func:`stop` and :class:`Profiler`.
"""

from spanprof.config import ConfigError
from spanprof.profiler import Profiler, active, start, stop

__all__ = ["ConfigError", "Profiler", "active", "start", "stop"]
__version__ = "0.1.0"
