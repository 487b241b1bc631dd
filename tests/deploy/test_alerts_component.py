"""components/sink-alerts: the alerts consumer loads the shipped rules, then the ConfigMap's."""

from __future__ import annotations

import itertools
from pathlib import Path

from consumers.rules.options import SHIPPED
from consumers.rules.ruleset import DEFAULT_RULES, load_rules
from tests.deploy.conftest import render
from tests.deploy.rendered import named


def test_the_consumer_loads_the_shipped_rules_then_the_mounted_ones(tmp_path: Path) -> None:
    objects = render("base+sink-alerts+keda")
    deployment = named(objects, "Deployment", "audit-consumer-alerts")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    rules = [value for flag, value in itertools.pairwise(command) if flag == "--rules"]
    assert rules[0] == SHIPPED
    (mount,) = (m for m in container["volumeMounts"] if m["name"] == "rules")
    (volume,) = (v for v in pod["volumes"] if v["name"] == "rules")
    config_map = named(objects, "ConfigMap", volume["configMap"]["name"])
    paths = [DEFAULT_RULES]
    for path in rules[1:]:
        assert Path(path).parent == Path(mount["mountPath"])
        copy = tmp_path / Path(path).name
        copy.write_text(config_map["data"][Path(path).name])
        paths.append(copy)
    loaded = load_rules(paths)
    assert loaded.rule_names == load_rules([DEFAULT_RULES]).rule_names
