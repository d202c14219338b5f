"""Type stub of OTel's runtime context in C (``_context.c``)."""

from contextvars import ContextVar, Token
from typing import Any

class RetainingContext:
    """OTel's ContextVarsRuntimeContext; a detached context that an unresolved
    capture saw is kept alive until the sampler has resolved that capture."""

    inner: Any
    var: ContextVar[Any]
    max_kept: int
    unkept: int
    def __init__(self, var: ContextVar[Any], inner: Any, max_kept: int = 65536) -> None: ...
    def attach(self, context: Any, /) -> Token[Any]: ...
    def get_current(self) -> Any: ...
    def detach(self, token: Token[Any], /) -> None: ...
    def kept(self) -> list[Any]: ...
