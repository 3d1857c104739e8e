"""Tiny on-device models (fall, fire): the ``.tflite`` files, their metadata and the runtime.

The models are shipped inside the package beside this file (``fall.tflite`` +
``fall.json``, ``fire.tflite`` + ``fire.json``); ``training/`` rebuilds them.
"""

from agent.models.runtime import Model, ModelError, ModelMeta, available_runtimes, model_path

__all__ = ["Model", "ModelError", "ModelMeta", "available_runtimes", "model_path"]
