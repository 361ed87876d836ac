"""Wave-function models: flax modules returning complex log psi."""
