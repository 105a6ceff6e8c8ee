"""Inverse problems on a DEQ decoder: latent inference, reconstruction, sampling, training."""
