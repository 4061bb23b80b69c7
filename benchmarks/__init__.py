"""Benchmarks: each module has a ``main()`` that measures and prints its figures."""
