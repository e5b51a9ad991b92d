"""Layer 1, the ``odeon`` command: arguments, one-line errors, the demo, following a PyTorchJob."""
