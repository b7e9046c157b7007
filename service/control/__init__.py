"""The control plane: which models each worker serves, the state the workers share, the model
store as the service sees it, and the start-up preflight."""
