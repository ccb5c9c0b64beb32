"""shared/simulation."""
