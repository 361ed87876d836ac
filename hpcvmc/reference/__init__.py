"""Independent reference solutions (plane-wave bands, Hartree-Fock, band-projected ED) in numpy."""
