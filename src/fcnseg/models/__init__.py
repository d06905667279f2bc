"""Models: backbones (named feature maps at known strides) plus heads, behind one name table.

Importing this package imports every model module, whose `register_model` calls fill the leaf
registry (`registry.py`); `build_model` (`factory.py`) then builds any name. The modules:
`paper_fcn` (the authors' Caffe nets, exactly), `skip_fcn` (the FCN skip head on any backbone),
`fusion` (RGB-D fusion and multi-head wrappers), `backbones/` (encoder table).
"""

from fcnseg.models import fusion, multihead, paper_fcn, skip_fcn  # noqa: F401  (register names)
from fcnseg.models.factory import build_model, check_model_contract, list_models, model_info
from fcnseg.models.protocol import SegmentationModel

__all__ = ["SegmentationModel", "build_model", "check_model_contract", "list_models", "model_info"]
