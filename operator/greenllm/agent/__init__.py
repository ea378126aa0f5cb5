"""The node agent: applies per-GPU power settings chosen by the operator (DaemonSet)."""
