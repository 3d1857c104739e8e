"""Fire: the development recordings and the model comparison (``python -m bench.eval_fire``)."""
