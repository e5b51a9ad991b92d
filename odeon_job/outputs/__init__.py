"""Layer 3, what a run leaves: its folder's names and rules, callbacks (history, checkpoints, pictures,
predictions, the console report) and loggers (TensorBoard, MLflow)."""
