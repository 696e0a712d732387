"""The fleet's deployment files (``deploy/``) checked without a cluster or a Docker daemon.

- Kubernetes built-in kinds: ``kubernetes-validate`` in strict mode (unknown fields are errors) against the
  Kubernetes OpenAPI schemas it ships.
- The CRDs (KEDA ``ScaledObject``, prometheus-operator ``ServiceMonitor`` and ``PrometheusRule``): the JSON schema
  of the models that ``cloudcoil-models-keda`` / ``cloudcoil-models-prometheus-operator`` generate from the CRDs'
  OpenAPI schemas, made strict here (an object with declared properties takes no other).
- The compose file: the compose-spec JSON schema (``tests/data/compose_spec.json``, the copy shipped in the
  ``docker-compose`` 1.29.2 wheel), plus the references between the compose file, the Dockerfile and the
  Prometheus and Grafana files.
- Every PromQL expression (dashboard panels, alert rules, KEDA triggers) is parsed with ``promql-parser`` and each
  metric it names must be a sample the fleet's metrics endpoint really exports: the real collector reads real job
  records of every pool on a redis-server.
- The KEDA thresholds and the README's sizing table are recomputed from the cost model (``estimate``).
- ``promtool`` (Debian's prometheus package, required) checks the rules and the compose stack's Prometheus config,
  and runs the alert rules' unit tests (``tests/data/fleet_alerts_test.yml``): each alert fires on the series
  it watches.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from fleet_harness import start_redis
from prometheus_client.parser import text_string_to_metric_families

from sonic_core.cli import build_parser
from sonic_core.cli.estimate import estimate_report, predicted_cost
from sonic_core.fleet.fleet_metrics import render_metrics
from sonic_core.fleet.jobs import DEFAULT_TEMPLATE
from sonic_core.fleet.keys import KEYS_ENV
from sonic_core.fleet.pools import POOLS
from sonic_core.fleet.records import HISTOGRAMS, JobRecords
from sonic_core.metering.ledger import LEDGER_ENV
from sonic_core.metering.tiers import load_tiers
from sonic_core.settings import SonicSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
DATA = REPO / "tests" / "data"
KUBERNETES_VERSION = "1.37.0"
GRAFANA_DATASOURCE_UID = "sonic-prometheus"


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    """``(file name, document)`` of every manifest the kustomization applies."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [(name, document) for name in kustomization["resources"]
            for document in yaml.safe_load_all((K8S / name).read_text()) if document]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in k8s_documents() if document["kind"] == kind]


def test_the_kustomization_applies_every_manifest_of_the_folder():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(path.name for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


BUILT_IN_GROUPS = ("v1", "apps/v1")


def test_built_in_manifests_validate_strictly_against_the_kubernetes_schema():
    checked = 0
    for name, document in k8s_documents():
        if document["apiVersion"] in BUILT_IN_GROUPS:
            try:
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name} {document['kind']} {document['metadata']['name']}: {exc}")
            checked += 1
    assert checked >= 1 + len(POOLS) + 2  # the gateway, a worker per pool, their Service and the ConfigMap at least


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object that declares its properties."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    if api_version == "keda.sh/v1alpha1":
        from cloudcoil.models.keda import v1alpha1 as models
    elif api_version == "monitoring.coreos.com/v1":
        from cloudcoil.models.prometheus_operator import v1 as models
    else:
        raise AssertionError(f"no schema for {api_version} {kind}: add its CRD models to this test")
    schema = strict(getattr(models, kind).model_json_schema(by_alias=True))
    return jsonschema.Draft202012Validator(schema)


def test_custom_resources_validate_strictly_against_their_crd_schemas():
    kinds = set()
    for name, document in k8s_documents():
        if document["apiVersion"] not in BUILT_IN_GROUPS:
            validator = crd_validator(document["apiVersion"], document["kind"])
            errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
                      for error in validator.iter_errors(document)]
            assert not errors, f"{name} {document['kind']}: {errors}"
            kinds.add(document["kind"])
    assert kinds == {"ScaledObject", "ServiceMonitor", "PrometheusRule"}


def test_the_crd_check_refuses_a_misspelt_field():
    scaled = of_kind("ScaledObject")[0]
    misspelt = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 3}}
    assert not list(crd_validator(scaled["apiVersion"], "ScaledObject").iter_errors(scaled))
    assert list(crd_validator(scaled["apiVersion"], "ScaledObject").iter_errors(misspelt))


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def test_one_worker_deployment_per_pool_on_its_queue_gpu_and_nodes():
    workers = {document["metadata"]["labels"]["sonic.fleet/pool"]: document for document in of_kind("Deployment")
               if document["metadata"]["labels"].get("app.kubernetes.io/name") == "sonic-worker"}
    assert sorted(workers) == sorted(pool.name for pool in POOLS)
    for pool in POOLS:
        spec = workers[pool.name]["spec"]["template"]["spec"]
        worker = container(workers[pool.name])
        assert worker["args"] == ["-Q", pool.queue]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert spec["nodeSelector"] == {"sonic.fleet/gpu": pool.gpu, "sonic.fleet/pool": pool.name}


def fleet_env_names() -> set[str]:
    """The environment variables sonic_core/fleet/config.py reads."""
    source = (REPO / "sonic_core" / "fleet" / "config.py").read_text()
    return set(re.findall(r'(?:os\.environ\.get|_env_number)\("(\w+)"', source)) | {LEDGER_ENV}


def test_the_config_map_sets_only_variables_the_fleet_reads_and_every_service_gets_it():
    (config_map,) = of_kind("ConfigMap")
    assert set(config_map["data"]) <= fleet_env_names()
    assert {"SONIC_FLEET_BROKER", "SONIC_FLEET_REDIS", LEDGER_ENV, "SONIC_FLEET_STORAGE"} <= set(config_map["data"])
    for deployment in of_kind("Deployment"):
        sources = [source.get("configMapRef", {}).get("name") for source in container(deployment)["envFrom"]]
        assert config_map["metadata"]["name"] in sources
    (gateway,) = [document for document in of_kind("Deployment") if document["metadata"]["name"] == "sonic-gateway"]
    assert {"name": KEYS_ENV, "value": "/etc/sonic/keys.toml"} in container(gateway)["env"]


@pytest.fixture(scope="module")
def exported_samples(tmp_path_factory) -> set[str]:
    """The sample names of the gateway's /metrics, rendered by the real collector from records of every pool."""
    service, url = start_redis(tmp_path_factory.mktemp("redis"))
    records = JobRecords(url)
    try:
        for pool in POOLS:
            records.create(f"job-{pool.name}", pool.name, 10)
            for histogram in HISTOGRAMS:
                records.observe(pool.name, histogram, 3.0)
        records.set_worker_memory("worker-1", 2**30, 2**34, 60)
        body, _ = render_metrics(records)
    finally:
        records.close()
        service.stop()
    samples = {sample.name for family in text_string_to_metric_families(body.decode()) for sample in family.samples}
    assert {"sonic_fleet_queued_tokens", "sonic_fleet_queue_delay_seconds_bucket"} <= samples
    return samples


def selectors(expr: str) -> Iterator[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(promql_parser.parse(expr), lambda node: found.append(node)
                       if isinstance(node, promql_parser.VectorSelector) else None)
    assert found, f"{expr!r} reads no metric"
    return iter(found)


def assert_real_metrics(where: str, expr: str, samples: set[str]) -> None:
    unknown = [selector.name for selector in selectors(expr) if selector.name not in samples]
    assert not unknown, f"{where}: {expr!r} names {unknown}, which the fleet does not export"


def pool_matchers(expr: str) -> set[str]:
    return {matcher.value for selector in selectors(expr) for matcher in selector.matchers.matchers
            if matcher.name == "pool"}


def test_keda_scales_each_pool_on_its_own_queued_tokens(exported_samples):
    scaled = {document["spec"]["scaleTargetRef"]["name"]: document for document in of_kind("ScaledObject")}
    workers = {document["metadata"]["name"]: document for document in of_kind("Deployment")}
    assert sorted(scaled) == sorted(f"sonic-worker-{pool.name}" for pool in POOLS)
    for target, document in scaled.items():
        pool = workers[target]["metadata"]["labels"]["sonic.fleet/pool"]
        triggers = document["spec"]["triggers"]
        assert all(trigger["type"] == "prometheus" for trigger in triggers)
        for trigger in triggers:
            assert_real_metrics(target, trigger["metadata"]["query"], exported_samples)
            assert pool_matchers(trigger["metadata"]["query"]) == {pool}
        queued_tokens = [trigger for trigger in triggers if {selector.name for selector in
                                                             selectors(trigger["metadata"]["query"])}
                         == {"sonic_fleet_queued_tokens"}]
        assert len(queued_tokens) == 1 and float(queued_tokens[0]["metadata"]["threshold"]) > 0


def test_the_prometheus_rule_carries_the_rules_file(exported_samples):
    rules_file = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    (rule,) = of_kind("PrometheusRule")
    assert rule["spec"] == rules_file
    alerts = {entry["alert"]: entry for group in rules_file["groups"] for entry in group["rules"]}
    assert {"SonicWorkerGpuMemoryHigh", "SonicQueueDelayHigh"} <= set(alerts)
    for name, entry in alerts.items():
        assert_real_metrics(name, entry["expr"], exported_samples)


def test_the_compose_file_validates_against_the_compose_spec():
    schema = json.loads((DATA / "compose_spec.json").read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    errors = [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
              for error in jsonschema.Draft201909Validator(schema).iter_errors(compose)]
    assert not errors
    assert list(jsonschema.Draft201909Validator(schema).iter_errors(
        {**compose, "services": {**compose["services"], "redis": {**compose["services"]["redis"], "imag": "x"}}}))
    assert set(compose["services"]) == {"redis", "gateway", "worker", "prometheus", "grafana"}


def dockerfile_stages() -> set[str]:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    return set(re.findall(r"^FROM \S+ AS (\w+)$", text, flags=re.MULTILINE))


def test_compose_builds_dockerfile_stages_and_mounts_files_that_exist():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == \
                (DEPLOY / "docker" / "Dockerfile").resolve()
            assert service["build"]["target"] in dockerfile_stages()
        for volume in service.get("volumes", []):
            source = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", volume.split(":")[0])
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which deploy/ lacks"
    assert {"SONIC_FLEET_BROKER", "SONIC_FLEET_REDIS", LEDGER_ENV, "SONIC_FLEET_STORAGE"} <= \
        set(compose["services"]["worker"]["environment"]) <= fleet_env_names()


def test_the_dockerfile_copies_files_that_exist_and_starts_real_commands():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.MULTILINE):
        for source in sources.split():
            assert (REPO / source).exists(), f"the Dockerfile copies {source}, which the repository lacks"
            assert source.split("/")[0] not in ignored, f"{source} is left out of the build context"
    shared_stage = text[:text.index(" AS gateway")]
    assert f"COPY {DEFAULT_TEMPLATE.parent.parent.relative_to(REPO)} " in shared_stage  # the gateway's job template
    entrypoint = json.loads(re.search(r"^FROM \S+ AS gateway$.*?^ENTRYPOINT (\[[^\n]*\])$", text,
                                      flags=re.MULTILINE | re.DOTALL).group(1))
    assert entrypoint[:3] == ["python", "-m", "sonic_core"]
    args = build_parser().parse_args(entrypoint[3:])
    assert (args.command, args.host, args.port) == ("gateway", "0.0.0.0", 8000)
    script = (DEPLOY / "docker" / "worker-entrypoint.sh").read_text()
    assert "celery -A sonic_core.fleet.worker worker" in script and "--concurrency=1" in script
    assert "SONIC_COMFY_URL=" in script


def test_prometheus_scrapes_the_gateway_service_of_the_compose_stack():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway:8000"]
    assert "127.0.0.1:8000:8000" in compose["services"]["gateway"]["ports"]
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()


DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "time": {"type": "object", "required": ["from", "to"]},
        "panels": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["id", "type", "title", "gridPos", "datasource", "targets"],
            "properties": {
                "id": {"type": "integer"},
                "type": {"enum": ["timeseries", "stat", "gauge", "bargauge", "table", "heatmap"]},
                "title": {"type": "string", "minLength": 1},
                "datasource": {"$ref": "#/$defs/datasource"},
                "gridPos": {"type": "object", "required": ["h", "w", "x", "y"], "additionalProperties": False,
                            "properties": {"h": {"type": "integer", "minimum": 1},
                                           "w": {"type": "integer", "minimum": 1, "maximum": 24},
                                           "x": {"type": "integer", "minimum": 0, "maximum": 23},
                                           "y": {"type": "integer", "minimum": 0}}},
                "targets": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["refId", "expr", "datasource"],
                    "properties": {"refId": {"type": "string"}, "expr": {"type": "string", "minLength": 1},
                                   "datasource": {"$ref": "#/$defs/datasource"}}}}}}}},
    "$defs": {"datasource": {"type": "object", "required": ["type", "uid"],
                             "properties": {"type": {"const": "prometheus"},
                                            "uid": {"const": GRAFANA_DATASOURCE_UID}}}},
}


def test_the_grafana_dashboard_is_well_formed_and_charts_real_metrics(exported_samples):
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sonic-fleet.json").read_text())
    jsonschema.Draft202012Validator(DASHBOARD_SCHEMA).validate(dashboard)
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    assert all(panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24 for panel in panels)
    for panel in panels:
        for target in panel["targets"]:
            assert_real_metrics(panel["title"], target["expr"], exported_samples)
    charted = {selector.name for panel in panels for target in panel["targets"] for selector in
               selectors(target["expr"])}
    assert {"sonic_fleet_queued_tokens", "sonic_fleet_queued_jobs", "sonic_fleet_running_jobs",
            "sonic_fleet_job_seconds_bucket", "sonic_fleet_queue_delay_seconds_bucket",
            "sonic_fleet_worker_memory_used_bytes"} <= charted


def test_grafana_provisions_the_datasource_and_the_dashboard_folder_compose_mounts():
    provisioning = DEPLOY / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["uid"] == GRAFANA_DATASOURCE_UID and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "sonic.yml").read_text())["providers"]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in compose["services"]["grafana"]["volumes"]


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/apt-packages.txt)")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules_and_the_config():
    for args in (("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")),
                 ("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_on_the_series_it_watches():
    done = promtool("test", "rules", str(DATA / "fleet_alerts_test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


SIZING_CLIP_SECONDS = 10.0
SIZING_HQ_RESOLUTION = 1024  # hq has no resolution limit: its sizing row and threshold assume 1024 px
WORK_PER_WORKER_SECONDS = 300  # each worker's share of queued work the KEDA threshold aims at


def estimate(resolution: int, profile: str) -> tuple[float, int, float]:
    """``(predicted seconds, tokens, peak GiB)`` of a 10 s clip, as ``python -m sonic_core estimate`` reports them."""
    settings = SonicSettings(min_resolution=resolution)
    prediction = predicted_cost(SIZING_CLIP_SECONDS, settings, profile, "fp16", "sonic")
    report = estimate_report(SIZING_CLIP_SECONDS, settings, load_tiers(None), prediction=prediction)
    return report["predicted_seconds"], report["tokens"], report["predicted_peak_bytes"] / 2**30


def test_keda_thresholds_are_five_minutes_of_work_on_the_cost_model():
    thresholds = {document["spec"]["scaleTargetRef"]["name"]: float(trigger["metadata"]["threshold"])
                  for document in of_kind("ScaledObject") for trigger in document["spec"]["triggers"]
                  if trigger["name"] == "queued-tokens"}
    for pool in POOLS:
        seconds, tokens, _ = estimate(pool.max_resolution or SIZING_HQ_RESOLUTION, pool.profile)
        assert thresholds[f"sonic-worker-{pool.name}"] == round(tokens / seconds * WORK_PER_WORKER_SECONDS)


def test_the_readme_sizing_table_is_what_the_cost_model_predicts():
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) px \| ([^|]+) \| (\d+) \| ([\d.]+) GiB \| ([\d.]+) \| (\d+) \|$", readme,
                      flags=re.MULTILINE)
    assert len(rows) >= len(POOLS)
    for resolution, card, seconds, peak, per_hour, workers in rows:
        pool_name = card.split()[0]
        profile = "a100" if "A100" in card else next(pool.profile for pool in POOLS if pool.name == pool_name)
        predicted, _, peak_gib = estimate(int(resolution), profile)
        assert int(seconds) == round(predicted) and float(peak) == round(peak_gib, 1)
        assert float(per_hour) == round(3600 / predicted, 1)
        assert int(workers) == math.ceil(100 * predicted / 3600 / 0.8)  # 100 clips/h at 80 % busy
