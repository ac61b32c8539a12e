"""Timing helper shared by the bench scripts."""
import time


def best_of(fn, repeat: int):
    """(fastest wall time of `repeat` calls of fn, the last call's result)."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out
