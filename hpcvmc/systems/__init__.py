"""Physical systems: configuration spaces, Hamiltonians and local energies."""
