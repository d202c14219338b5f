"""Three threads burn CPU in three functions, in ratio 1:2:3."""

import sys
import threading
import time

from truth import write

UNIT = float(sys.argv[1]) if len(sys.argv) > 1 else 0.4
used: dict[str, float] = {}


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def burn_one() -> None:
    spin(UNIT)


def burn_two() -> None:
    spin(2 * UNIT)


def burn_three() -> None:
    spin(3 * UNIT)


def run(fn) -> None:
    start = time.thread_time()
    fn()
    used[fn.__name__] = time.thread_time() - start


threads = [threading.Thread(target=run, args=(fn,)) for fn in (burn_one, burn_two, burn_three)]
for t in threads:
    t.start()
for t in threads:
    t.join()
write({"cpu": used})
