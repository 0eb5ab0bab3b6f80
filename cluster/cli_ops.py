"""``hetrec`` commands that run things on a cluster: ``cluster up|down|status``, ``pipeline``,
``submit`` and ``jobs status|logs|stop``. Registered on the main group by ``cluster.cli``."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

import click

from graphs.exceptions import ClusterError, HetrecError

DASHBOARD = "http://127.0.0.1:8265"
_address = click.option("--address", default=DASHBOARD, show_default=True, envvar="RAY_API_SERVER_ADDRESS",
                        help="The cluster's dashboard / job API (env RAY_API_SERVER_ADDRESS).")


@click.group("cluster")
def cluster_group() -> None:
    """Start, inspect and stop a Ray cluster: the local autoscaling profile, or a cloud
    cluster-launcher file such as ray_config.yaml."""


@cluster_group.command("up")
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.option("--local", is_flag=True, help="The local autoscaling profile (the default without CONFIG).")
@click.option("--port", type=int, default=6379, show_default=True, help="Local head's GCS port.")
@click.option("--dashboard-port", type=int, default=8265, show_default=True, help="Local dashboard / job API port.")
def cluster_up(config: Path | None, local: bool, port: int, dashboard_port: int) -> None:
    """Start a cluster. Local: a head with no task CPUs and the real autoscaler, which starts
    worker raylets here as jobs need them. CONFIG: ``ray up -y CONFIG``."""
    from cluster.launcher import cloud_command, up_local

    if config is not None and not local:
        subprocess.run(cloud_command("up", config), check=True)
        return
    address = up_local(port=port, dashboard_port=dashboard_port)
    click.echo(f"local autoscaling cluster up: dashboard and job API at {address}; "
               f"workers (trainer, updater, serving) start on demand")


@cluster_group.command("down")
@click.argument("config", required=False, type=click.Path(path_type=Path))
def cluster_down(config: Path | None) -> None:
    """Stop the cluster: ``ray down -y CONFIG``, or without CONFIG ``ray stop`` (this machine's
    Ray processes, the local head and its workers)."""
    from cluster.launcher import cloud_command, down_local

    if config is not None:
        subprocess.run(cloud_command("down", config), check=True)
    else:
        down_local()
        click.echo("local cluster stopped")


@cluster_group.command("status")
@_address
@click.option("--json", "as_json", is_flag=True, help="Workers by type, pending launches and failures as JSON.")
def cluster_status(address: str, as_json: bool) -> None:
    """The autoscaler's view: active and pending workers by type, resource use, demands."""
    from cluster.launcher import status

    report = status(address)
    click.echo(json.dumps({k: v for k, v in report.items() if k != "text"}) if as_json else report["text"])


@click.command("pipeline")
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--stages", default="pipeline", show_default=True,
              help="'pipeline' (all) or a comma-separated subset of data,partition,train,export,gfm,update,rank,serve.")
@click.option("--source", type=click.Path(path_type=Path), help="MovieLens files for 'data' (default: ml-100k "
              "from the recbole wheel).")
@click.option("--parts", type=int, default=4, show_default=True)
@click.option("--epochs", type=int, default=1, show_default=True, help="HetSGFormer epochs (and GFM's towers').")
@click.option("--steps", type=int, default=None, help="Cap on HetSGFormer steps per epoch.")
@click.option("--workers", type=int, default=2, show_default=True, help="Ray Train workers (both trainings).")
@click.option("--use-gpu", is_flag=True, help="One GPU per training worker and export actor.")
@click.option("--ille-actors", type=int, default=2, show_default=True)
@click.option("--events", type=click.Path(path_type=Path, dir_okay=False),
              help="Parquet of events for 'update' (default: one cold-start user).")
@click.option("--ranker-steps", type=int, default=60, show_default=True, help="DSGL training steps.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Serve's HTTP bind address.")
@click.option("--port", type=int, default=8000, show_default=True, help="Serve's HTTP port.")
@click.option("--proxy-location", type=click.Choice(["EveryNode", "HeadOnly"]), default="EveryNode",
              show_default=True, help="Where Serve runs HTTP proxies.")
@click.option("--roles/--no-roles", default=None,
              help="Place each stage on its node type (trainer, updater, serving custom resources). "
                   "Default: on when connected to a cluster (--address or RAY_ADDRESS, as in a job).")
@click.option("--overwrite", is_flag=True, help="Replace an existing training run under ROOT.")
@click.option("--text", is_flag=True, help="'data' also encodes titles and genres into title_emb "
              "(hetrec data text), a feature every model reads, and 'gfm' trains GFM on it into ROOT/gfm.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Secrets file (readable on the serving nodes) with the token POST /events needs.")
@click.option("--storage", default=None, help="Filesystem URI (s3://bucket/prefix, file:///...) each stage's "
              "outputs are published to and missing inputs restored from.")
@click.option("--address", "ray_address", default=None, help="Ray address (default: RAY_ADDRESS, else an "
              "embedded local Ray).")
def pipeline_cmd(root: Path, stages: str, ray_address: str | None, roles: bool | None, **options) -> None:
    """Run the pipeline's stages in order under ROOT: data -> partition -> train -> export ->
    gfm (with --text) -> update -> rank -> serve (each stage's outputs in ROOT, see cluster/pipeline.py)."""
    from cluster.pipeline import PipelineConfig, parse_stages, preload, run_pipeline
    from cluster.runtime import init_ray

    names = parse_stages(stages)
    on_cluster = bool(ray_address or os.environ.get("RAY_ADDRESS"))
    options = {k: str(v) if isinstance(v, Path) else v for k, v in options.items()}   # made absolute by the config
    cfg = PipelineConfig(root=str(root), roles=on_cluster if roles is None else roles, **options)
    preload(names)
    if on_cluster:  # see preload: off the job's working_dir, which may vanish on a fake cluster
        cfg_root = Path(cfg.root)
        cfg_root.mkdir(parents=True, exist_ok=True)
        os.chdir(cfg_root)
    init_ray(ray_address)
    report = run_pipeline(cfg, names)
    for name, out in report["stages"].items():
        click.echo(f"{name:<10} {out['seconds']:>7.1f} s  " + json.dumps({k: v for k, v in out.items() if k != 'seconds'}))
    click.echo(f"pipeline: {len(names)} stages in {report['seconds']:.1f} s; report {root / 'pipeline.json'}")


@click.command("submit", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("stages")
@click.argument("root")
@_address
@click.option("--wait", is_flag=True, help="Wait for the job to end; exit 1 unless it succeeded.")
@click.pass_context
def submit_cmd(ctx: click.Context, stages: str, root: str, address: str, wait: bool) -> None:
    """Submit STAGES (pipeline, or e.g. train,export) on run root ROOT as a Ray job; prints the
    job id. Options after ROOT go to ``hetrec pipeline`` (checked here first). ROOT must be
    readable by every node of the cluster."""
    from cluster.jobs import job_logs, submit_stages, wait_job
    from cluster.pipeline import parse_stages

    parse_stages(stages)
    pipeline_cmd.make_context("pipeline", [root, *ctx.args])    # bad options fail here, not in the job
    job_id = submit_stages(stages, root, list(ctx.args), address)
    click.echo(job_id)
    if wait:
        final = wait_job(address, job_id)
        click.echo(job_logs(address, job_id), err=True)
        click.echo(f"job {job_id}: {final}")
        if final != "SUCCEEDED":
            raise SystemExit(1)


@click.group("jobs")
def jobs_group() -> None:
    """Follow submitted jobs by id."""


@jobs_group.command("status")
@click.argument("job_id")
@_address
def jobs_status(job_id: str, address: str) -> None:
    """Status, message and run time of JOB_ID."""
    from cluster.jobs import job_status

    click.echo(json.dumps(job_status(address, job_id)))


@jobs_group.command("logs")
@click.argument("job_id")
@_address
def jobs_logs(job_id: str, address: str) -> None:
    """The driver output of JOB_ID so far."""
    from cluster.jobs import job_logs

    click.echo(job_logs(address, job_id), nl=False)


@jobs_group.command("stop")
@click.argument("job_id")
@_address
def jobs_stop(job_id: str, address: str) -> None:
    """Stop JOB_ID."""
    from cluster.jobs import stop_job

    click.echo(f"stop requested for {job_id}" if stop_job(address, job_id) else f"{job_id} had already ended")


@click.command("serve-stop")
@_address
def serve_stop_cmd(address: str) -> None:
    """Delete the cluster's Serve applications (``serve shutdown``); its serving workers then
    go idle and the autoscaler removes them."""
    from cluster.launcher import serve_shutdown

    serve_shutdown(address)
    click.echo(f"serve applications on {address} are shutting down")


def cluster_errors(command: click.Command) -> click.Command:
    """Ray's cluster launcher, job and Serve clients fail with RuntimeError, OSError (no
    dashboard at the address, a refused connection), TimeoutError or a failed ``ray``
    subprocess; for the commands that only drive them, those become ClusterError here, so
    the CLI prints one line."""
    callback = command.callback

    @functools.wraps(callback)
    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except HetrecError:
            raise
        except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
            raise ClusterError(f"{command.name}: {err}") from err

    command.callback = run
    return command


def register(main: click.Group) -> None:
    for command in (cluster_up, cluster_down, cluster_status, submit_cmd, jobs_status, jobs_logs, jobs_stop,
                    serve_stop_cmd):
        cluster_errors(command)
    for command in (cluster_group, pipeline_cmd, submit_cmd, jobs_group, serve_stop_cmd):
        main.add_command(command)
