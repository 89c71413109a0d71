"""hwsim: compile low-bit adapter formats through a graph IR and TVM, and measure what they cost."""

__version__ = "0.1.0"
