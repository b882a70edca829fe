"""modelyard: a model registry and multi-model serving platform for scikit-learn models."""

__version__ = "0.1.0"
