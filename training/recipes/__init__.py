"""One module per family recipe: ``get_args_parser()``, ``task(args)``, ``main(args)`` and, at its end,
the family's ``register_training(...)`` (training/registry.py imports every module here); the loop
is training/engine.py."""
