"""Label-propagation baselines without learning: nearest labelled frame, and depth-based reprojection."""
