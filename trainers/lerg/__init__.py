"""LERG: quantised compositional embeddings, graph rewiring and a device bundle (issue: LERG)."""
