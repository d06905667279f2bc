"""Models: backbones (named feature maps at known strides) plus heads, behind one name table.

Importing this package imports every model module, whose `register_model` calls fill the leaf
registry (`registry.py`); `build_model` (`factory.py`) then builds any name. The modules:
`paper_fcn` (the authors' Caffe nets, exactly) and `paper_nets` (their builders and names),
`deeplab` (DeepLab-LargeFOV and DeepLab-ASPP on VGG16, as released),
`shell` (any backbone + any decode head),
`heads/` (decode heads and the head table), `segmenters` (every head on every backbone),
`fusion` (RGB-D fusion), `segnet` (SegNet, SegNet-Basic and their Bayesian versions), `enet`
(ENet, a whole net), `multihead` (one trunk, a dictionary of heads), `backbones/` (encoder table).
"""

from fcnseg.models import (  # noqa: F401  (register names)
    deeplab,
    enet,
    fusion,
    multihead,
    paper_nets,
    segmenters,
    segnet,
    unet2015,
)
from fcnseg.models.factory import build_model, check_model_contract, list_models, model_info
from fcnseg.models.protocol import SegmentationModel

__all__ = ["SegmentationModel", "build_model", "check_model_contract", "list_models", "model_info"]
