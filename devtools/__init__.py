"""Tools for developing the project, not part of the product: ``launch`` starts, waits for and stops a
server for the tests, the benchmarks and the reliability runs.

Not installed (pyproject's packages) and not packed (bentofile.yaml): run from the repository root.
"""
