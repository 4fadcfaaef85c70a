"""gate: see docs/architecture.md."""
