"""The hetrec CLI: commands run for real, errors are one line without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import ray
from click.testing import CliRunner

from cluster.cli import main
from graphs.exceptions import GraphFormatError


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_help_lists_every_command(runner):
    out = runner.invoke(main, ["--help"])
    assert out.exit_code == 0
    for cmd in ("data", "partition", "graph", "train", "export", "eval"):
        assert cmd in out.output
    for sub in (["data", "movielens"], ["data", "synthetic"], ["partition"], ["graph", "stats"],
                ["graph", "validate"], ["train"], ["export"], ["eval"]):
        res = runner.invoke(main, sub + ["--help"])
        assert res.exit_code == 0 and "Usage:" in res.output, sub


def test_train_defaults_are_the_train_config_defaults(runner, tmp_path):
    from trainers.hetsgformer.train import TrainConfig

    params = {p.name: p.default for p in main.get_command(None, "train").params}
    default = TrainConfig()
    assert (params["workers"], params["epochs"], params["batch_size"], params["lr"], params["fanout_per"]) == \
        (default.workers, default.epochs, default.batch_size, default.lr, default.fanout_per)
    assert tuple(int(f) for f in params["fanouts"].split(",")) == default.fanouts
    res = runner.invoke(main, ["train", str(tmp_path / "g"), str(tmp_path / "run"), "--fanouts", "10,x"])
    assert res.exit_code != 0 and "--fanouts" in res.output and "10,x" in res.output


def test_synthetic_partition_and_stats(runner, tmp_path, ray_local):
    res = runner.invoke(main, ["data", "synthetic", str(tmp_path / "g"), "--edges", "5000", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "5,000 edges" in res.output
    stats = json.loads(runner.invoke(main, ["graph", "stats", str(tmp_path / "g"), "--json"]).output)
    assert stats["kind"] == "graph" and stats["num_edges"] == 5000
    assert sum(e["edges"] for e in stats["edge_types"]) == 5000

    res = runner.invoke(main, ["partition", str(tmp_path / "g"), str(tmp_path / "p"), "--parts", "3"])
    assert res.exit_code == 0, res.output
    assert "3 shards" in res.output and "10,000 edges incl. reverses" in res.output
    pstats = json.loads(runner.invoke(main, ["graph", "stats", str(tmp_path / "p"), "--json"]).output)
    assert pstats["kind"] == "partitioned" and sum(pstats["edges_per_shard"]) == 10000

    res = runner.invoke(main, ["graph", "validate", str(tmp_path / "g"), "--full"])
    assert res.exit_code == 0 and res.output.startswith("ok:")


def test_movielens_from_grouplens_folder(runner, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "u.data").write_text("1\t1\t5\t874965758\n2\t1\t3\t876893171\n1\t2\t4\t878542960\n")
    (src / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
                                "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0\n")
    (src / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    res = runner.invoke(main, ["data", "movielens", str(tmp_path / "ml"), "--from", str(src)])
    assert res.exit_code == 0, res.output
    stats = json.loads(runner.invoke(main, ["graph", "stats", str(tmp_path / "ml"), "--json"]).output)
    counts = {n["type"]: n["nodes"] for n in stats["node_types"]}
    assert counts["user"] == 2 and counts["movie"] == 2
    assert {e["type"]: e["edges"] for e in stats["edge_types"]}["user__rates__movie"] == 3


def test_eval_popularity_writes_table_and_json(runner, tmp_path):
    res = runner.invoke(main, ["data", "synthetic", str(tmp_path / "g"), "--edges", "20000"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["eval", str(tmp_path / "g"), "--models", "pop", "--etype", "user__clicks__item",
                               "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    assert any(line.startswith("model") for line in res.output.splitlines()) and "ndcg@10" in res.output
    assert "random seed 0 pop: ndcg@10" in res.output  # progress line per fitted model
    doc = json.loads((tmp_path / "r.json").read_text())
    assert 0 < doc["results"]["pop"]["ndcg@10"]["mean"] < 1


def test_errors_are_one_line_and_debug_shows_the_exception(runner, tmp_path):
    res = runner.invoke(main, ["graph", "stats", str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert res.output.strip() == f"error: {tmp_path / 'nope'}: neither a graph directory (schema.json) " \
                                 "nor a partitioned graph (meta.json)"
    res = runner.invoke(main, ["--debug", "graph", "stats", str(tmp_path / "nope")])
    assert isinstance(res.exception, GraphFormatError)

    res = runner.invoke(main, ["data", "synthetic", str(tmp_path / "g"), "--edges", "0"])
    assert res.exit_code == 1 and "num_edges" in res.output and "got 0" in res.output
    res = runner.invoke(main, ["partition", str(tmp_path / "g"), str(tmp_path / "p"), "--parts", "0"])
    assert res.exit_code == 1 and "num_parts must be an int >= 1, got 0" in res.output


def test_installed_console_script_exits_nonzero_without_traceback(tmp_path):
    hetrec = subprocess.run([sys.executable, "-m", "cluster.cli", "graph", "validate", str(tmp_path)],
                            capture_output=True, text=True)
    assert hetrec.returncode == 1
    assert hetrec.stderr.count("\n") == 1 and "Traceback" not in hetrec.stderr
    assert "schema.json: not found" in hetrec.stderr


def test_error_from_a_ray_task_prints_the_original_message(ray_local):
    from cluster.cli import one_line

    @ray.remote
    def route():
        raise GraphFormatError("edges user__clicks__item: src id out of range [0, 5)")

    with pytest.raises(GraphFormatError) as info:  # Ray re-raises it as RayTaskError(GraphFormatError)
        ray.get(route.remote())
    assert "Traceback" in str(info.value) or "ray::" in str(info.value)
    assert one_line(info.value) == "edges user__clicks__item: src id out of range [0, 5)"
