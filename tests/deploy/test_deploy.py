"""deploy/: the Kubernetes manifests and Dockerfiles name ports, paths, flags and metrics the server
really has (its `serve --help`, its route table, its /metrics), since none can be applied here."""

from __future__ import annotations

import argparse
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from embedserve.cli import PULL_SETTINGS, _parser
from embedserve.loading import LoadSettings
from embedserve.server.metrics import Metrics
from embedserve.server.routes import ROUTES
from embedserve.settings import settings_from_args

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "k8s" / name).read_text())


@pytest.fixture(scope="module")
def serve_help() -> str:
    done = subprocess.run(
        [sys.executable, "-m", "embedserve.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


@pytest.fixture(scope="module")
def serve_flags(serve_help) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z0-9-]*)", serve_help))


def _get_paths() -> set[str]:
    return {
        path
        for handler in ROUTES
        if "GET" in (handler.http_methods or ())
        for path in handler.paths
    }


def _flags_and_values(args: list[str]) -> dict[str, str]:
    pairs = {}
    for at, arg in enumerate(args):
        if arg.startswith("--"):
            name, _, value = arg.partition("=")
            nxt = args[at + 1] if at + 1 < len(args) else ""
            pairs[name] = value or ("" if nxt.startswith("--") else nxt)
    return pairs


def _shutdown_seconds() -> int:
    """The server's longest time from SIGTERM to exit with `--drain-seconds`'s default, from its
    one declaration: the drain and what follows it."""
    from embedserve.server.config import ServerConfig
    from embedserve.server.lifecycle import shutdown_seconds

    return math.ceil(shutdown_seconds(ServerConfig().drain_seconds))


def test_deployment_matches_the_server(serve_flags, serve_help):
    deployment = _load("deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = _flags_and_values(container["args"])
    assert set(args) <= serve_flags, set(args) - serve_flags
    port = int(args["--port"])
    assert args["--host"] == "0.0.0.0"  # reachable from the pod network, not loopback only
    [named] = [p for p in container["ports"] if p["name"] == "http"]
    assert named["containerPort"] == port
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= template["metadata"]["labels"].items()
    )

    paths = _get_paths()
    assert container["livenessProbe"]["httpGet"]["path"] == "/health" in paths
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready" in paths
    assert template["metadata"]["annotations"]["prometheus.io/path"] in paths
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", port)

    # Kubelet: preStop, then SIGTERM, then the drain and uvicorn's graceful shutdown after it;
    # all of it inside the grace period.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + _shutdown_seconds()

    env = {e["name"] for e in container.get("env", [])}
    assert env <= {"EMBEDSERVE_API_KEYS"}  # the one variable the server reads
    # A missing secret must stop the pod: an optional one gave a server open to anyone.
    for entry in container.get("env", []):
        secret = entry.get("valueFrom", {}).get("secretKeyRef")
        assert secret is None or secret.get("optional") is False, entry
    assert "EMBEDSERVE_API_KEYS" in serve_help
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert _mib(requests["memory"]) <= _mib(limits["memory"])


def _mib(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def test_service_and_autoscalers_point_at_the_deployment():
    deployment = _load("deployment.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _load("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {
        p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    for name in ("hpa.yaml", "hpa-queue.yaml"):
        hpa = _load(name)
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert _load("hpa.yaml")["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    # Every container of a CPU-scaled pod needs a CPU request, or the HPA has nothing to divide by.
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]


def test_queue_metric_exists_in_the_server_exposition():
    exposition = Metrics().exposition().decode()
    served = set(re.findall(r"^# TYPE (\S+) (\S+)", exposition, re.MULTILINE))
    gauges = {name for name, kind in served if kind == "gauge"}
    metric = _load("hpa-queue.yaml")["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert metric in gauges
    [rule] = _load("prometheus-adapter-rules.yaml")["rules"]["custom"]
    assert rule["name"]["as"] == metric
    assert rule["seriesQuery"].split("{")[0] in gauges


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_run_real_commands(name, serve_flags):
    text = (DEPLOY / name).read_text()
    instructions = [line.split(None, 1) for line in _joined_lines(text)]
    entry = _exec_form(_only(instructions, "ENTRYPOINT"))
    cmd = _exec_form(_only(instructions, "CMD"))
    assert entry == ["embedserve", "serve"]
    args = _flags_and_values(cmd)
    assert set(args) <= serve_flags
    assert f"EXPOSE {args['--port']}" in text
    assert args["--host"] == "0.0.0.0"
    runs = [body for word, body in instructions if word == "RUN"]
    assert any("pip install" in r and ".whl" in r for r in runs)
    pulls = _pulls(runs)
    assert pulls, "the model is pulled at build time"
    assert {"serve", "pull"} <= _subcommands()
    if name.endswith("cuda"):
        assert args["--providers"] == "cuda"


@pytest.mark.parametrize("build_args", [{}, {"MODEL": "BAAI/bge-small-en-v1.5"}])
@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfiles_pull_what_serve_loads(name, build_args):
    """The image's cache is read-only at run time: every file `serve` would fetch at start (the
    model it serves, that model's graph for its flags, tiktoken's rank files) is pulled at build
    time, whatever `--build-arg MODEL=...` names."""
    from embedserve.server.cli import config_from_args
    from embedserve.token_encodings import ENCODINGS

    instructions, image_env = _build((DEPLOY / name).read_text(), build_args)
    serve = _parser().parse_args(["serve", *_exec_form(_only(instructions, "CMD"))])
    config = config_from_args(serve, environ=image_env)
    pulls = _pulls([body for word, body in instructions if word == "RUN"])
    if config.token_encoding in ENCODINGS:
        assert ["tiktoken"] in pulls, f"{name}: serve decodes {config.token_encoding}"
    [model_pull] = [words for words in pulls if words[:1] != ["tiktoken"]]
    pull = _parser().parse_args(["pull", *model_pull])
    assert [m.spec for m in config.models] == [pull.model]
    if build_args:
        assert pull.model == build_args["MODEL"]
    # The settings that decide the files pulled are serve's: else the image holds another graph.
    assert settings_from_args(pull, LoadSettings, PULL_SETTINGS, environ=image_env) == (
        settings_from_args(serve, LoadSettings, PULL_SETTINGS, environ=image_env)
    )


def _build(text: str, build_args: dict[str, str]) -> tuple[list[list[str]], dict[str, str]]:
    """A Dockerfile's instructions with its ARGs (defaults, or `build_args`) substituted as
    `docker build` does, and the environment its ENV instructions give the container."""
    instructions = [line.split(None, 1) for line in _joined_lines(text)]
    values = dict(body.partition("=")[::2] for word, body in instructions if word == "ARG")
    values.update(build_args)

    def substitute(body: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m[1], m[0]), body)

    substituted = [[word, substitute(body)] for word, body in instructions]
    env = dict(
        pair.partition("=")[::2]
        for word, body in substituted
        if word == "ENV"
        for pair in shlex.split(body)
    )
    return substituted, env


def _pulls(runs: list[str]) -> list[list[str]]:
    """The arguments of every `embedserve pull` in the RUN instructions."""
    commands = [shlex.split(part) for run in runs for part in run.split("&&")]
    return [words[2:] for words in commands if words[:2] == ["embedserve", "pull"]]


def _subcommands() -> set[str]:
    [sub] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def _joined_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return lines


def _only(instructions: list[list[str]], word: str) -> str:
    found = [body for w, body in instructions if w == word]
    assert len(found) == 1, f"{word}: {found}"
    return found[0]


def _exec_form(body: str) -> list[str]:
    parsed = yaml.safe_load(body)  # a JSON array is YAML too
    assert isinstance(parsed, list), body
    return parsed


def test_cuda_image_matches_the_cuda_onnxruntime_gpu_is_built_for():
    """The CUDA image's CUDA major is the one the installed onnxruntime-gpu links against (its
    provider library needs libcudart.so.<major>): 1.31 moved from CUDA 12 to 13."""
    info = pytest.importorskip("onnxruntime.capi.build_and_package_info")
    if getattr(info, "package_name", "") != "onnxruntime-gpu":
        pytest.skip("onnxruntime-gpu is not the installed package")
    [base] = re.findall(
        r"^FROM nvidia/cuda:(\S+)", (DEPLOY / "Dockerfile.cuda").read_text(), re.MULTILINE
    )
    assert "cudnn" in base, f"{base}: onnxruntime-gpu's CUDA provider needs cuDNN"
    assert base.split(".")[0] == info.cuda_version.split(".")[0], (
        f"Dockerfile.cuda is on CUDA {base}, onnxruntime-gpu {info.__version__} on "
        f"{info.cuda_version}"
    )
