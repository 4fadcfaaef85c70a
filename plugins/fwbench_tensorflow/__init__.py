"""The tensorflow backend plugin (placeholder until the backend lands)."""
