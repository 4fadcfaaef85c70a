"""The torch backend plugin (placeholder until the backend lands)."""
