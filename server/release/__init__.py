"""Release gate: generate from a federated run, check, and publish or refuse."""

from server.release.gate import Check, GateConfig, SitePrivacy, apply_gate, load_gate, read_site_privacy
from server.release.publish import Release, prepare_release, site_epsilons, write_release

__all__ = ["Check", "GateConfig", "Release", "SitePrivacy", "apply_gate", "load_gate", "prepare_release",
           "read_site_privacy", "site_epsilons", "write_release"]
