"""Benchmarks: the in-process engine, the service over HTTP and a naive FastAPI peer (``python -m benchmarks.run``).

Kept outside the installed packages on purpose: it is a harness run from the repository root
(``make bench``), and ``benchmarks/baselines/`` holds the reference server it compares against.
"""
