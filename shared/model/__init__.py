"""The denoiser and the mapping between trajectory tensors and model vectors."""
