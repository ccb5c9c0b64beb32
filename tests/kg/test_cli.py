"""kg/cli.py: `raregraph kg paths` orders targets by the score it is run for."""

from __future__ import annotations

import json

from tests.raregraph.test_cli import run


def test_paths_on_a_pathsim_metapath_are_best_pathsim_first(real_graph_dir) -> None:
    """DhPhD is "similar diseases (PathSim)": the top 5 are the five highest PathSim scores, not
    the five highest DWPC (which put Cornea plana 1, PathSim 0.03, fourth for Marfan syndrome)."""
    args = ("kg", "paths", real_graph_dir, "--source", "ORPHA:558", "--metapath", "DhPhD", "--json")
    code, stdout, _ = run(*args, "--top", "5")
    assert code == 0
    data = json.loads(stdout)
    top = [t["pathsim"] for t in data["targets"]]
    assert data["sorted_by"] == "pathsim" and top == sorted(top, reverse=True)
    code, stdout, _ = run(*args, "--top", "100000")
    every = json.loads(stdout)["targets"]
    assert len(every) == data["reached"]
    assert top == sorted((t["pathsim"] for t in every), reverse=True)[:5]
    assert [t["id"] for t in every[:5]] == [t["id"] for t in data["targets"]]
    by_dwpc = [t["id"] for t in sorted(every, key=lambda t: -t["dwpc"])[:5]]
    assert by_dwpc != [t["id"] for t in data["targets"]]  # the two orders differ on this graph
    code, stdout, _ = run("kg", "paths", real_graph_dir, "--source", "ORPHA:558", "--metapath", "DhPhD", "--top", "5")
    assert code == 0 and "best PathSim first" in stdout


def test_paths_on_other_metapaths_stay_best_dwpc_first(real_graph_dir) -> None:
    code, stdout, _ = run("kg", "paths", real_graph_dir, "--source", "ORPHA:558", "--metapath", "DhP", "--top", "10",
                          "--json", "-q")
    data = json.loads(stdout)
    dwpc = [t["dwpc"] for t in data["targets"]]
    assert code == 0 and data["sorted_by"] == "dwpc" and dwpc == sorted(dwpc, reverse=True)
