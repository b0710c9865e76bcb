"""docker-compose.yml parses, and every file it mounts or builds from exists; the Logstash
pipeline writes what the resolver reads. (What the Dockerfile copies: test_image_context.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_parses_and_every_mounted_or_built_file_exists():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
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
