"""adam_v2_jax: Adam-v2 (localizability, composability, decomposability) pretraining in JAX/Flax."""
__version__ = "0.1.0"
