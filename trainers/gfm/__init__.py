"""GFM: item foundation embeddings from text over the co-interaction graph (and, to come, a
two-tower adaptation layer)."""
