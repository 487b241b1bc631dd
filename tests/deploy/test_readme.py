"""README "Run on Kubernetes": the commands name files, Secrets and objects that exist."""

from __future__ import annotations

import re

from tests.deploy.conftest import KUBERNETES, REPO, load_yaml_documents, render


def section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Run on Kubernetes")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_paths_in_the_walkthrough_exist() -> None:
    paths = set(re.findall(r"\bdeploy/[\w./-]*\w", section()))
    assert paths
    missing = sorted(path for path in paths if not (REPO / path).exists())
    assert not missing, missing


def test_sed_edits_hit_their_targets() -> None:
    edits = re.findall(r'sed -i "s#([^#]+)#[^"]*"\s*\\?\s*(deploy/\S+)', section())
    assert len(edits) == 2
    for pattern, path in edits:
        assert pattern in (REPO / path).read_text(), (pattern, path)


def test_secrets_created_have_the_keys_the_manifests_read() -> None:
    text = section()
    created = re.findall(r"create secret generic (\S+)((?:[^\n]*\\\n)*[^\n]*)", text)
    assert {name for name, _ in created} == {"audit-relay-tls", "audit-relay-tokens"}
    for name, options in created:
        keys = set(re.findall(r"--from-(?:file|literal)=([\w.-]+)", options))
        (template,) = load_yaml_documents(KUBERNETES / "secrets" / f"{name}.yaml")
        assert keys == set(template["stringData"]), name


def test_objects_waited_for_are_in_the_quickstart() -> None:
    objects = {
        (obj["kind"].lower(), obj["metadata"]["name"]) for obj in render("overlays/quickstart")
    }
    waited = re.findall(r"(statefulset|deployment|job)/([\w-]+)", section())
    assert waited
    for kind, name in waited:
        assert (kind, name) in objects, (kind, name)
