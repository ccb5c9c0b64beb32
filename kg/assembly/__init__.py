"""kg/assembly."""
