"""Session fixtures: the real graph built once from the embedded HPO files, keys, a bundle."""

from __future__ import annotations

from pathlib import Path

import pytest

from kg.assembly.pipeline import Sources, build_graph, default_hpo_dir
from kg.bundle import make_bundle
from kg.store import KnowledgeGraph
from kg.study import load_study
from kg.embedded import default_study
from shared.signing.keys import load_private_key, new_keypair
from tests.postgres import postgres_server  # noqa: F401 — a real PostgreSQL server, started once per session


@pytest.fixture(scope="session")
def hpo_dir() -> Path:
    return default_hpo_dir()


@pytest.fixture(scope="session")
def real_graph_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kg") / "graph"
    build_graph(Sources.default()).save(out)
    return out


@pytest.fixture(scope="session")
def real_graph(real_graph_dir) -> KnowledgeGraph:
    return KnowledgeGraph.load(real_graph_dir)


@pytest.fixture(scope="session")
def coordinator_key(tmp_path_factory) -> tuple[Path, Path]:
    return new_keypair(tmp_path_factory.mktemp("keys") / "coordinator")


@pytest.fixture(scope="session")
def demo_bundle(real_graph, coordinator_key, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    make_bundle(real_graph, load_study(default_study()), sign_key=load_private_key(coordinator_key[0]), out=out)
    return out
