"""fcnseg: Fully Convolutional Networks for semantic segmentation (Long, Shelhamer, Darrell)."""

from fcnseg.models import build_model, list_models, model_info

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "list_models", "model_info"]
