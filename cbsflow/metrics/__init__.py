"""Evaluation metrics (kind ``metric``): sample quality in data space and likelihood under the model."""
