"""Training pipeline: data, training, evaluation and registration of the DM2 risk model."""
