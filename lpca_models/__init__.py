"""lpca_models: white-box model backends (PyTorch/transformers, MLX/mlx-lm), the model zoo and agents.

The backends arrive with the model-backend issue; this package only reserves the name.
"""

__version__ = "0.1.0"
