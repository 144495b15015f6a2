"""bcos_jax: B-cos networks in JAX/Flax NNX, with exact explanations."""

__version__ = "0.1.0"
