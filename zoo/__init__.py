"""The contract that training, export, the service and the clients share, torch-free and small:

- ``zoo.spec``: the spec every checkpoint and store entry carries (input layout, normalisation, labels);
- ``zoo.families``: the family table (task, alias route, request decoding) and the store-name rules;
- ``zoo.entry``: what a model store entry holds (a file per format, tensor names) and its lookup;
- ``zoo.errors``: an exception as one line of a message.

Standard library and numpy only; the bento packs this package beside ``service/``.
"""

__version__ = "0.1.0"  # the one place: pyproject.toml reads it, and so does the bento (which installs no package)
