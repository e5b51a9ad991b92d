"""Layer 4, the LightningModule and what it is made of: networks, losses, optimizers, metrics, plots."""
