"""Geometry from images alone: sparse depth from matched keypoints triangulated with known poses."""

from labelfield.geometry.triangulate import SparseDepth, TriangulationOptions, load_or_triangulate, triangulate_scene

__all__ = ["SparseDepth", "TriangulationOptions", "load_or_triangulate", "triangulate_scene"]
