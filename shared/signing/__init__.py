"""shared/signing."""
