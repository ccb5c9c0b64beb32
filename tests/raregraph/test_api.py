"""``raregraph.api``: the README's script runs through it end to end, every function raises the
project's errors (never ``SystemExit``), and the README's script uses only names the API has."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest

from raregraph import api
from shared.errors import InputError, OutputExistsError, RareGraphError

ROOT = Path(__file__).resolve().parents[2]


def readme_script() -> str:
    """The ```python block under the README's heading "The Python API"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### The Python API", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert found, "README: no ```python block under ### The Python API"
    return found.group(1)


def test_the_readme_script_uses_only_names_the_api_has() -> None:
    tree = ast.parse(readme_script())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "api"}
    used |= {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "raregraph.api"
             for a in node.names}
    assert used and used <= set(api.__all__), sorted(used - set(api.__all__))
    for node in ast.walk(tree):  # every keyword the script passes is a parameter of the function it calls
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "api"):
            params = inspect.signature(getattr(api, node.func.attr)).parameters
            assert {k.arg for k in node.keywords} <= set(params), node.func.attr
    assert len(readme_script().strip().splitlines()) <= 12


def test_every_public_function_is_documented() -> None:
    for name in api.__all__:
        doc = inspect.getdoc(getattr(api, name)) or ""
        assert doc, name
        if inspect.isfunction(getattr(api, name)) and name not in ("plan_federation", "run_federation"):
            assert "Returns\n-------" in doc and "Raises\n------" in doc, name


@pytest.mark.slow
def test_the_readme_pipeline_runs_through_the_api(tmp_path) -> None:
    """The README script's steps with tiny settings: graph, keys, bundle, two sites, validation,
    one federated round, 20 synthetic patients, evaluation, the ledger audit."""
    out = tmp_path
    graph = api.build_graph(out / "kg")
    key, pub = api.new_keys(out / "keys" / "coordinator")
    bundle = api.make_bundle(graph, out / "bundle", sign_key=key)
    sites = api.simulate_sites(bundle, out / "sites", pub=pub, sites=2, seed=3, min_patients=30, max_patients=40)
    reports = [api.validate_site(site, bundle=bundle, pub=pub) for site in sites]
    run = api.federate(bundle, pub, sites, out=out / "run", epsilon=8.0, rounds=1, local_steps=2, batch_size=8,
                       pretrain_steps=0, noise_multiplicity=1, eval_per_disease=0)
    synthetic = api.generate(run.model, bundle=bundle, pub=pub, n=20, out=out / "synthetic", steps=8)
    metrics = api.evaluate(sites[0], synthetic, bundle=bundle, pub=pub, out=out / "report")
    audit = api.audit(run.run_dir)

    assert (graph / "manifest.json").is_file() and (bundle / "manifest.json").is_file()
    assert [s.name for s in sites] == ["site-1", "site-2"]
    assert all(r.report.patients >= 30 and r.report.study_cohort["patients"] > 0 for r in reports)
    assert set(run.privacy["sites"]) == {"site-1", "site-2"} and run.model.is_dir()
    assert all(0 < max(r["epsilon"] for r in rows) <= 8.0 for rows in run.privacy["sites"].values())
    card = json.loads((synthetic / "data_card.json").read_text())
    assert card["counts"]["patients"] == 20
    assert "mmd2" in metrics["fidelity"] and (out / "report" / "metrics.json").is_file()
    assert audit.ok and run.ok and {s.site_id for s in audit.sites} == {"site-1", "site-2"}
    with pytest.raises(OutputExistsError):  # the same step twice: refused, nothing replaced
        api.generate(run.model, bundle=bundle, pub=pub, n=20, out=synthetic)


@pytest.fixture
def tiny(tmp_path) -> dict:
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "file").write_text("x")
    key, pub = api.new_keys(tmp_path / "keys" / "k")
    return {"tmp": tmp_path, "existing": existing, "missing": tmp_path / "missing", "key": key, "pub": pub}


BAD = {
    "new_keys": (OutputExistsError, lambda t: api.new_keys(t["tmp"] / "keys" / "k")),
    "build_graph": (OutputExistsError, lambda t: api.build_graph(t["existing"])),
    "make_bundle": (RareGraphError, lambda t: api.make_bundle(t["missing"], t["tmp"] / "b", sign_key=t["key"])),
    "simulate_sites": (InputError, lambda t: api.simulate_sites(t["missing"], t["tmp"] / "s", pub=t["pub"], fmt="xml")),
    "validate_site": (InputError, lambda t: api.validate_site(t["missing"])),
    "validate_site without pub": (InputError, lambda t: api.validate_site(t["existing"], bundle=t["missing"])),
    "federate": (InputError, lambda t: api.federate(t["missing"], t["pub"], [t["missing"]], out=t["tmp"] / "r",
                                                    epsilon=1.0, guidance="bogus")),
    "generate": (InputError, lambda t: api.generate(t["missing"], bundle=t["missing"], pub=t["pub"], n=1,
                                                    out=t["tmp"] / "g", fmt="xml")),
    "evaluate": (RareGraphError, lambda t: api.evaluate(t["missing"], t["missing"], bundle=t["missing"], pub=t["pub"],
                                                        out=t["tmp"] / "e")),
    "release": (OutputExistsError, lambda t: api.release(t["missing"], bundle=t["missing"], pub=t["pub"], n=1,
                                                         out=t["existing"])),
    "audit": (InputError, lambda t: api.audit(t["existing"])),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_raises_the_projects_error_not_system_exit(name: str, tiny) -> None:
    error, call = BAD[name]
    with pytest.raises(error):
        call(tiny)
