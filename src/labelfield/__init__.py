"""labelfield: dense, 3D-consistent label maps for a whole image sequence from a few labelled frames.

Pipeline: data (formats -> Scene) -> render (rays, occupancy, sampling, compositing) -> field (hash grid,
heads) -> train (losses, loop, checkpoints) -> annotate / export / evaluate -> cli.
"""

from labelfield.cameras import Intrinsics
from labelfield.errors import LabelfieldError
from labelfield.scene import ClassTable, Frame, Scene

__version__ = "0.1.0"

__all__ = ["ClassTable", "Frame", "Intrinsics", "LabelfieldError", "Scene", "__version__"]
