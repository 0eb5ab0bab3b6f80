"""DCCL: MetaPatch on the device, MoMoDistill in the cloud (issue: DCCL)."""
