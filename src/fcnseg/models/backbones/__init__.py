"""Encoders that fulfil the backbone contract in `base.py`."""

from fcnseg.models.backbones.base import Backbone, stride_key

__all__ = ["Backbone", "stride_key"]
