"""The ONNX Runtime backend's tests run only where onnx and onnxruntime are installed."""
from __future__ import annotations

import importlib.util

if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxruntime") is None:
    collect_ignore_glob = ["test_*.py"]
