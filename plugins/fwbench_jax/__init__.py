"""The jax backend plugin (placeholder until the backend lands)."""
