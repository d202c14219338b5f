"""A thread recurses 300 deep, then burns CPU in its leaf function."""

import threading
import time

from truth import write

DEPTH = 300


def leaf_burner() -> None:
    end = time.thread_time() + 0.5
    while time.thread_time() < end:
        pass


def descend(n: int) -> None:
    if n == 0:
        leaf_burner()
    else:
        descend(n - 1)


t = threading.Thread(target=descend, args=(DEPTH,), name="deep")
t.start()
t.join()
write({"depth": DEPTH})
