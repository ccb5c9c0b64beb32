"""The ``raregraph`` command line: the edge that wires the packages together.

Only this package may import from every other one; nothing imports it.
"""

__version__ = "0.1.0"
