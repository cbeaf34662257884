"""Launchers: the end-to-end demo and cluster job rendering (horovodrun, SLURM, Kubernetes, Beam)."""
