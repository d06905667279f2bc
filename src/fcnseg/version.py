"""The package version, in a leaf of its own.

Why a leaf: the ONNX metadata and the graph cache's sidecar record the version, and the CLI's
`--version` prints it; importing it from the package facade (`fcnseg/__init__.py`) would make
those lower layers import the top one.
"""

__version__ = "0.1.0"
