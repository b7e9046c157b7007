"""One module per family recipe: ``get_args_parser()``, ``task(args)`` and ``main(args)``; the loop is training/engine.py."""

RECIPES = {
    "mnist-mlp": "training.recipes.mnist_mlp",
    "cifar10-resnet18": "training.recipes.cifar10_resnet18",
    "transfer-resnet18": "training.recipes.transfer_resnet18",
    "sine-rnn": "training.recipes.sine_rnn",
}
