"""Cross-cutting concerns of a training, as Lightning callbacks."""
