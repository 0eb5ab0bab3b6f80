"""The cluster files and the stages' resource declarations, checked against Ray's own schema
and against each other (no cluster started here; tests/cluster/test_autoscaling.py does)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from ray.autoscaler._private.util import validate_config

from cluster.cli import main
from cluster.jobs import entrypoint
from cluster.launcher import LOCAL_PROFILE, cloud_command, local_profile, ray_cli_env
from cluster.pipeline import ROLES, STAGES, PipelineConfig, parse_stages
from serve.app import build_app
from serve.config import ServeConfig

ROOT = Path(__file__).resolve().parents[2]
CLOUD, LOCAL = ROOT / "ray_config.yaml", LOCAL_PROFILE


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("path", [CLOUD, LOCAL], ids=["ray_config", "local_profile"])
def test_cluster_files_pass_rays_schema(path):
    validate_config(load(path))   # raises on any schema violation


def test_local_profile_mirrors_ray_config():
    cloud, local = load(CLOUD), load(LOCAL)
    assert cloud["provider"]["type"] == "aws" and cloud["provider"]["region"]
    assert local["provider"]["type"] == "fake_multinode"
    for doc in (cloud, local):
        types = doc["available_node_types"]
        head = types[doc["head_node_type"]]
        assert head["resources"] == {"CPU": 0}                        # no stage's work on the head
        workers = {name: t for name, t in types.items() if name != doc["head_node_type"]}
        assert set(workers) == set(ROLES)                             # one worker type per role
        for name, spec in workers.items():
            assert spec["resources"][name] == spec["resources"]["CPU"], name   # role resource = its CPUs
            assert spec["min_workers"] == 0 and spec["max_workers"] >= 1
    assert cloud["available_node_types"]["trainer"]["resources"]["GPU"] == 1
    start = " ".join(cloud["head_start_ray_commands"])
    assert "--num-cpus=0" in start and "--dashboard-host=127.0.0.1" in start
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):   # HAProxy, as `hetrec serve`
        assert "RAY_SERVE_ENABLE_HA_PROXY=1" in " ".join(cloud[commands]), commands


def test_local_profile_on_another_port_points_workers_at_it():
    assert local_profile(6379) == LOCAL
    moved = load(local_profile(6391))
    assert moved["provider"]["gcs_address"].endswith(":6391")
    assert moved["available_node_types"] == load(LOCAL)["available_node_types"]


def test_cloud_command_passes_through_to_ray_up(tmp_path):
    argv = cloud_command("up", CLOUD)
    assert argv[1:] == ["up", "-y", str(CLOUD)] and argv[0].endswith("ray")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        cloud_command("down", tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="'sideways'"):
        cloud_command("sideways", CLOUD)


def test_stages_declare_their_node_types():
    on, off = PipelineConfig(root="/r", roles=True), PipelineConfig(root="/r")
    assert on.role("updater") == {"updater": 1.0} and off.role("updater") == {}
    assert on.worker_resources() == {"CPU": 1, "trainer": 1.0} and off.worker_resources() is None
    gpu = PipelineConfig(root="/r", roles=True, use_gpu=True).worker_resources()
    assert gpu == {"CPU": 1, "GPU": 1, "trainer": 1.0}
    with pytest.raises(ValueError, match="PipelineConfig.workers must be an int >= 1, got 0"):
        PipelineConfig(root="/r", workers=0)


def test_serve_replicas_ask_for_the_serving_resource_per_cpu(tmp_path):
    cfg = ServeConfig(run_dir=str(tmp_path), colocate=False, resources={"serving": 1}, ille_resources={"updater": 1})
    app = build_app(cfg)
    ingress = app._bound_deployment
    assert ingress.ray_actor_options["resources"] == {"serving": cfg.ingress_cpus}
    ranker = ingress.init_args[1]._bound_deployment          # Ingress(retriever, ranker, updater, cfg)
    assert ranker.ray_actor_options["resources"] == {"serving": cfg.ranker_cpus}
    assert ingress._deployment_config.max_queued_requests == ranker._deployment_config.max_queued_requests == 64
    with pytest.raises(ValueError, match=r"ServeConfig.resources .*'serving': -1"):
        ServeConfig(run_dir=str(tmp_path), resources={"serving": -1})


def test_colocated_app_has_no_retriever_or_ranker_and_sums_their_cpus(tmp_path):
    cfg = ServeConfig(run_dir=str(tmp_path), colocate=True, resources={"serving": 1})
    ingress = build_app(cfg)._bound_deployment
    retriever, ranker, updater, _ = ingress.init_args
    assert retriever is None and ranker is None and updater._bound_deployment.name == "Updater"
    cpus = cfg.ingress_cpus + cfg.retriever_cpus + cfg.ranker_cpus
    assert ingress.ray_actor_options["num_cpus"] == cpus and ingress.ray_actor_options["resources"] == {"serving": cpus}
    with pytest.raises(ValueError, match="ServeConfig.colocate must be true or false, got 'yes'"):
        ServeConfig(run_dir=str(tmp_path), colocate="yes")


def test_parse_stages_orders_and_names_unknowns():
    assert parse_stages("pipeline") == list(STAGES)
    assert parse_stages("serve, train,export") == ["train", "export", "serve"]
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['trian'\]"):
        parse_stages("trian,export")


def test_job_entrypoint_runs_the_pipeline_command():
    assert entrypoint("train,export", "/shared/ml", ["--epochs", "2"]) == \
        "python -m cluster.cli pipeline /shared/ml --stages train,export --epochs 2"


def test_ray_cli_env_turns_token_auth_on_only_with_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "auth_token"))
    assert "RAY_AUTH_MODE" not in ray_cli_env()
    (tmp_path / "auth_token").write_text("x" * 32)
    assert ray_cli_env()["RAY_AUTH_MODE"] == "token"


def test_help_lists_every_command():
    out = CliRunner().invoke(main, ["--help"]).output
    for command in ("cluster", "pipeline", "submit", "jobs", "serve-stop", "data", "partition", "train", "export",
                    "eval", "update", "rank", "serve", "graph"):
        assert f"  {command} " in out, command
    assert "up" in CliRunner().invoke(main, ["cluster", "--help"]).output
