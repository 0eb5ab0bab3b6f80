"""ILLE: locally-linear reconstruction weights and the joint batch solve (``weights``), the
space a node is reconstructed in (``inputs``), the embeddings view over update deltas
(``embedding_view``), one actor's shard state (``shard_updater``) and the Ray actor pool
that applies logged graph-change events (``pool``)."""
