"""One-off studies: each a command whose result is written up beside it, not part of ``make bench``.

- ``sine_band``, ``sine_bound``: the sine-rnn training band and its least-squares bound (README "Training").
- ``train_targets``: every family's recipe against its accuracy and time targets (README "Training").
- ``floor``: the frameworks' per-request cost on an echo route (docs/bench/scaleout/floor.md).
- ``worker_memory``: resident memory per BentoML worker (service/README.md).
"""
