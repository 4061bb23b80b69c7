"""Fan-out figures of the naive baseline hub (``benchmarks/naive_hub.py``)."""

from __future__ import annotations

from ._fanout import bench
from ._systems import Naive


def main() -> None:
    bench(Naive())


if __name__ == "__main__":
    main()
