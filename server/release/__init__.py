"""Release gate: generate from a federated run, check, and publish or refuse.

Modules: ``gate`` (the thresholds and the checks), ``publish`` (generate, check, write) and
``cli`` (``raregraph release``). Importing the package imports none of them.
"""
