"""shared/trajectories."""
