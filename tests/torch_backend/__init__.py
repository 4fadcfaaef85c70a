"""Tests of the PyTorch backend (skipped where torch is not installed)."""
