"""docker-compose.yml parses, and every file it mounts or builds from exists; the Logstash
pipeline writes what the resolver reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _scalar(text: str):
    if text[:1] in ('"', "[", "{"):
        return json.loads(text)
    try:
        return int(text)
    except ValueError:
        return text


def parse_yaml_subset(text: str):
    """The YAML the compose file is written in: block mappings, block sequences of scalars,
    JSON-style quoted strings and flow collections, full-line comments. (PyYAML when present.)"""
    try:
        import yaml
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    lines = [(len(raw) - len(raw.lstrip(" ")), raw.strip()) for raw in text.splitlines()
             if raw.strip() and not raw.lstrip().startswith("#")]

    def block(i: int, indent: int):
        if lines[i][1].startswith("- "):
            items = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
                items.append(_scalar(lines[i][1][2:].strip()))
                i += 1
            return items, i
        mapping = {}
        while i < len(lines) and lines[i][0] == indent:
            key, sep, rest = lines[i][1].partition(":")
            assert sep, f"not a mapping entry: {lines[i][1]!r}"
            rest = rest.strip()
            if rest:
                mapping[key] = _scalar(rest)
                i += 1
            else:
                mapping[key], i = block(i + 1, lines[i + 1][0])
        return mapping, i

    value, end = block(0, 0)
    assert end == len(lines), f"unparsed from line {end}: {lines[end]}"
    return value


def test_compose_parses_and_every_mounted_or_built_file_exists():
    compose = parse_yaml_subset((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres", "elasticsearch", "logstash", "kibana", "resolver", "init"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    resolver_env = services["resolver"]["environment"]
    for var in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "ELASTICSEARCH_URL", "LOGSTASH_URL", "KIBANA_URL"):
        assert f"ELK_RESOLVER_{var}" in resolver_env
    assert (ROOT / "deploy/logstash/samples").is_dir() and list((ROOT / "deploy/logstash/samples").glob("*.log"))


def test_dockerfile_copies_only_what_exists():
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


def test_logstash_pipeline_writes_what_the_resolver_reads():
    conf = (ROOT / "deploy/logstash/pipeline/logstash.conf").read_text()
    output = conf[conf.index("output {"):]
    kafka = output[output.index("kafka {"):]
    assert 'topic_id => "elk.errors.raw"' in kafka
    assert re.search(r"codec\s*=>\s*json\b", kafka)
    assert re.search(r'acks\s*=>\s*"1"', kafka)
    assert 'message_key => "%{[service][name]}"' in kafka
    fingerprint = conf[conf.index("fingerprint {"):]
    assert 'target => "[event][hash]"' in fingerprint.split("}")[0]
