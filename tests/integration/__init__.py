"""Real processes: horovodrun, torchrun, mpirun, the lab, sweeps, subprocess CLIs."""
