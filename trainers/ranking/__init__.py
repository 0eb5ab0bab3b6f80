"""Rankers: DSGL (time-aware sequences, second-order attention), DIN and the embedding MLP,
their samples and sequence graphs, and their Ray Train loop."""
