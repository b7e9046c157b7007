"""Tools for developing the project, not part of the product, shared by the tests, the benchmarks and
the reliability runs:

- ``launch``: start, wait for and stop a server (the one way any of them runs one);
- ``load``: closed-loop load that records when every request started and ended;
- ``faults``: faults injected into a running server (a killed worker, SIGTERM, broken stores).

Not installed (pyproject's packages) and not packed (bentofile.yaml): run from the repository root.
"""
