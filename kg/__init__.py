"""The public knowledge graph: source loaders, the typed graph store, meta-path scores and
the study bundle. ``kg`` may import ``shared``; nothing in ``shared`` imports ``kg``."""
