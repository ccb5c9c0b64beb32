"""Code that both the hospital side and the coordinator side import.

Import direction: ``kg`` may import ``shared``; ``shared`` never imports ``kg``,
``client`` or ``server``.
"""
