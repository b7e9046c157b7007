"""Container deployment helpers: bentofile variants and the container-vs-reference check."""
