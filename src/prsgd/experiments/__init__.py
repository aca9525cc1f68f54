"""Many runs: the sweep (spec, manifest, driver), the MPI sweep, Stich's speed-up experiment."""
