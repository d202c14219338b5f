"""Three asyncio tasks interleave CPU steps of 2, 4 and 6 ms on one loop."""

import asyncio
import sys
import time

from truth import write

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 300
used = {"step_two": 0.0, "step_four": 0.0, "step_six": 0.0}


def spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def step_two() -> None:
    spin(0.002)


def step_four() -> None:
    spin(0.004)


def step_six() -> None:
    spin(0.006)


async def task(fn) -> None:
    for _ in range(STEPS):
        start = time.thread_time()
        fn()
        used[fn.__name__] += time.thread_time() - start
        await asyncio.sleep(0)


async def main() -> None:
    await asyncio.gather(task(step_two), task(step_four), task(step_six))


asyncio.run(main())
write({"cpu": used})
