"""Tiny on-device models: the ``.tflite`` files, their metadata and the runtime.

The fall model is shipped inside the package beside this file (``fall.tflite`` +
``fall.json``); ``training/fall`` rebuilds it. Fire detection runs on rules and has no
model since 2026.12 (docs/fire.md).
"""

from agent.models.runtime import Model, ModelError, ModelMeta, available_runtimes, model_path

__all__ = ["Model", "ModelError", "ModelMeta", "available_runtimes", "model_path"]
