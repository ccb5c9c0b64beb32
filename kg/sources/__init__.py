"""Parsers for public knowledge sources, each in its published format."""
