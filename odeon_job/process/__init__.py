"""Foundation, this process: how it was started (ranks, launch styles, what its children inherit, run names) and
how it stops (SIGTERM, the grace period, exit status 143)."""
