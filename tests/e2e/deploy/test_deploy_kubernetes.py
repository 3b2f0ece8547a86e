"""deploy/kubernetes/, offline: every manifest against the API schemas kubernetes-validate ships
(a pinned Kubernetes version, strict: an unknown field fails), and what the files must agree
on with each other, with the image (deploy/Dockerfile) and with keyrelay's drain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from recipes import DEPLOY, DOCKERFILE

from addon.config.rules import load as load_rules
from addon.transport.drain import DRAIN_TIMEOUT

MANIFESTS = DEPLOY / "kubernetes"
KUBERNETES = "1.30.0"  # the oldest version the manifests are for; its schema ships in the package
PRESTOP_SECONDS = 5


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def resource(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def keyrelay_container() -> dict[str, Any]:
    (container,) = resource("Deployment", "keyrelay")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    "name,doc",
    [(f"{n}:{d['kind']}", d) for n, d in documents() if d["kind"] != "Kustomization"],
)
def test_each_manifest_is_valid_for_the_pinned_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_an_unknown_field_is_refused() -> None:
    """The check above can fail: a misspelt probe field."""
    deployment = resource("Deployment", "keyrelay")
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["httpGet"]["pathh"] = probe["httpGet"].pop("path")
    with pytest.raises(kubernetes_validate.ValidationError, match="pathh"):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in MANIFESTS.glob("*.yaml") if p.stem != "kustomization"
    )


def test_the_probes_and_the_grace_period_fit_keyrelays_drain() -> None:
    pod = resource("Deployment", "keyrelay")["spec"]["template"]["spec"]
    container = keyrelay_container()
    assert container["livenessProbe"]["httpGet"]["path"] == "/_keyrelay/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/_keyrelay/ready"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(PRESTOP_SECONDS)]
    drain = DRAIN_TIMEOUT
    for arg in container.get("args", []):
        if arg.startswith("keyrelay_drain_timeout="):
            drain = int(arg.split("=", 1)[1])
    assert pod["terminationGracePeriodSeconds"] > PRESTOP_SECONDS + drain


def test_the_pod_runs_the_image_as_the_image_expects() -> None:
    pod = resource("Deployment", "keyrelay")["spec"]["template"]["spec"]
    container = keyrelay_container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert str(pod["securityContext"]["runAsUser"]) == DOCKERFILE.user.split(":")[0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(DOCKERFILE.volumes) <= set(mounts)  # confdir: writable, not the root filesystem
    rules_dir = next(a for a in DOCKERFILE.entrypoint if a.startswith("keyrelay_rules="))
    rules_volume = volumes[mounts[str(Path(rules_dir.split("=", 1)[1]).parent)]]
    assert rules_volume["configMap"]["name"] == "keyrelay-rules"
    assert "subPath" not in str(container["volumeMounts"])  # a subPath mount is never updated
    (source,) = container["envFrom"]
    assert source["secretRef"]["name"] == resource("Secret", "keyrelay-keys")["metadata"]["name"]
    port = DOCKERFILE.env["KEYRELAY_PORT"]
    assert [p["containerPort"] for p in container["ports"]] == [int(port)]


def test_the_budget_and_the_autoscaler_select_the_deployment() -> None:
    labels = resource("Deployment", "keyrelay")["spec"]["template"]["metadata"]["labels"]
    pdb = resource("PodDisruptionBudget", "keyrelay")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert resource("Service", "keyrelay")["spec"]["selector"].items() <= labels.items()
    hpa = resource("HorizontalPodAutoscaler", "keyrelay")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "keyrelay",
    }
    assert hpa["minReplicas"] > pdb["minAvailable"]  # a node drain never waits on the budget


def test_the_configmaps_rules_are_deploy_rules_with_the_clusters_redis(tmp_path: Path) -> None:
    """One set of production rules: the ConfigMap's differ from deploy/rules.yaml only in the
    Redis address, which is the Service in redis.yaml. And they load."""
    text = resource("ConfigMap", "keyrelay-rules")["data"]["rules.yaml"]
    in_cluster = yaml.safe_load(text)
    shipped = yaml.safe_load((DEPLOY / "rules.yaml").read_text())
    redis_url = in_cluster["limits_backend"]["redis"]
    assert {**in_cluster, "limits_backend": {}} == {**shipped, "limits_backend": {}}
    assert in_cluster["limits_backend"] == {**shipped["limits_backend"], "redis": redis_url}
    service = resource("Service", "keyrelay-redis")
    port = service["spec"]["ports"][0]["port"]
    assert redis_url.startswith(f"redis://{service['metadata']['name']}:{port}/")
    secret = resource("Secret", "keyrelay-keys")["stringData"]
    (tmp_path / "rules.yaml").write_text(text)
    rules = load_rules(tmp_path / "rules.yaml", secret)
    assert sorted(p.name for p in rules.providers) == ["anthropic", "openai"]
