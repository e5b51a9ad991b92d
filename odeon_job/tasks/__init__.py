"""Layer 2, what each command does: a training wired end to end, the checks before it, validate, stats,
convert-history, the services' reachability, the SIGTERM handling of a run."""
