"""The numpy backend plugin (placeholder until the backend lands)."""
