"""The coordinator side: the Flower ServerApp, aggregation, checkpoints, the final model."""
