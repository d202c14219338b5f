"""Type stub of the native aggregation table (``_profile.c``)."""

Labels = tuple[tuple[str, str | int], ...]

class Window:
    max_keys: int
    def __init__(self, max_keys: int = 100_000) -> None: ...
    def __len__(self) -> int: ...
    def add(
        self,
        stack: bytes,
        thread_labels: Labels,
        link_labels: Labels,
        cpu_ns: int,
        wall_ns: int,
        count: int = 1,
        /,
    ) -> bool: ...
    def take(self) -> tuple[list[tuple[bytes, Labels, Labels, int, int, int]], int]: ...
