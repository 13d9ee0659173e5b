"""What the stand-alone benchmark scripts (bf16_vs_torch.py, wide_layers.py) share: their
command line's common part, the median time of a block of calls, and an argparse type for a
shape written AxBxC."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, List, Tuple

from fastnn import arguments


def block_median(call: Callable[[], object], count: int) -> float:
    """The median time of ``count`` calls of ``call``, in seconds (each call timed alone)."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def shape_type(form: str, example: str) -> Callable[[str], Tuple[int, int, int]]:
    """An argparse type for three positive sizes written AxBxC; its error names the expected
    ``form`` (e.g. "MxKxN") with an ``example`` and what it got."""
    def parse(text: str) -> Tuple[int, int, int]:
        try:
            a, b, c = (int(part) for part in text.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {form}, e.g. {example}, got {text!r}")
        if min(a, b, c) < 1:
            raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
        return a, b, c
    return parse


def parser(doc: str, shape: Callable[[str], Tuple[int, int, int]], shapes: List[str],
           rounds: int) -> argparse.ArgumentParser:
    """The scripts' command line: shapes (``shape`` parses each; ``shapes`` by default),
    ``--threads`` (2) and ``--rounds`` (``rounds``); the description is ``doc``'s first
    paragraph."""
    command = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    command.add_argument("shapes", nargs="*", type=shape, default=[shape(s) for s in shapes])
    command.add_argument("--threads", type=arguments.thread_count, default=2)
    command.add_argument("--rounds", type=arguments.positive_int, default=rounds)
    return command
