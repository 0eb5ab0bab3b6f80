"""Evaluation: interactions and their random/temporal splits, full-ranking metrics, the
baselines (popularity, MF-BPR, LightGCN), the heterogeneous peers (R-GCN, HGT), split
graphs and the ``run_eval`` harness."""
