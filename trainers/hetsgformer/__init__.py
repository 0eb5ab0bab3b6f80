"""HetSGFormer: the model (IEL, global and edge attention, GCN branch), its batch loss,
layer inference, the Ray Train loop, validation, training curves and embedding export."""
