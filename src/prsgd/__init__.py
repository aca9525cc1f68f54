"""prsgd: Parallel Restarted SGD (local SGD with periodic model averaging) on real ranks.

Entry points live at this level (`python -m prsgd.train`, `.doctor`, `.supervise`, `.mpi_sweep`,
`.clock`, `.lab`); everything else lives in a package by concern: core, data, algorithms,
backends, records, experiments, launch, clock, lab, plots, install.
"""
