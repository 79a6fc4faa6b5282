"""Building blocks shared by the systems: pooling, layer weighting, losses."""
