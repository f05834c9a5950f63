"""Input readers: the original TSV layout (more formats come with training)."""
