"""Fire model training: ``.venv-train/bin/python -m training.fire.train``."""
