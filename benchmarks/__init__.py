"""Benchmarks: the in-process engine, the service over HTTP and a naive FastAPI peer (``python -m benchmarks.run``).

Kept outside the installed packages on purpose: it is a harness run from the repository root
(``make bench``), and ``benchmarks/baselines/`` holds the peers it compares against.
``benchmarks/studies/`` holds one-off studies (each a command whose result is written up in the docs),
``benchmarks/reliability/`` the fault, hostile-upload and soak runs; the server launcher they all use is
``devtools/launch.py``. ``benchmarks/tests/`` tests the harness and the studies (``make test`` runs them
with tests/, which imports nothing from here).
"""
