"""Model sizes shared by the tests: a hash grid and sampler small enough for a few-second fit on 2 cores."""

TINY_NGP = dict(
    log2_table_size=12,
    n_levels=4,
    max_resolution=64,
    occupancy_resolution=16,
    hidden_dim=16,
    samples_per_diagonal=64,
    max_samples_per_ray=16,
)
"""NGPConfig overrides (`dataclasses.replace(config.model_config, **TINY_NGP)` or `NGPConfig(**TINY_NGP)`)."""
