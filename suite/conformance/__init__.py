"""conformance: see docs/architecture.md."""
