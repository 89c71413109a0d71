"""The cycle-approximate accelerator: instruction set, timing and functional simulators, energy."""
