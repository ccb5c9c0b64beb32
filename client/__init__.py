"""The hospital side: the Flower ClientApp, local DP training, local evaluation."""
