from elk_resolver.settings import make_settings


def test_lists_come_from_commas_and_regex_lists_keep_their_commas(monkeypatch):
    monkeypatch.setenv("ELK_RESOLVER_KUBECTL_NAMESPACES", "payments, shop")
    monkeypatch.setenv("ELK_RESOLVER_MASK_EXTRA_PATTERNS", "secret-\\d{3,5}\ninternal-[a-z]+")
    s = make_settings()
    assert s.kubectl_namespaces == ["payments", "shop"]
    assert s.mask_extra_patterns == ["secret-\\d{3,5}", "internal-[a-z]+"]
    monkeypatch.setenv("ELK_RESOLVER_MASK_EXTRA_PATTERNS", '["x{1,2}", "y"]')
    assert make_settings().mask_extra_patterns == ["x{1,2}", "y"]


def test_defaults_match_the_documented_topics_and_dry_run():
    s = make_settings(kafka_bootstrap_servers=None, database_url=None)
    assert s.topics()[:5] == [
        "elk.errors.raw",
        "elk.errors.analysis",
        "elk.errors.execution",
        "elk.errors.results",
        "elk.errors.dlq",
    ]
    assert s.execution_mode == "dry-run"
    assert s.kubectl_namespaces == []
    assert s.kubectl_verbs == ["rollout restart", "rollout undo", "scale", "delete pod"]


def test_isolated_prefixes_every_topic_and_group_and_nothing_else():
    s = make_settings(topic_partitions=3).isolated("t-abc")
    assert s.topics() == [f"t-abc-{n}" for n in ("raw", "analysis", "execution", "results", "dlq", "approvals")]
    assert (s.group_ingest, s.group_analyze, s.group_execute) == ("t-abc-ingest", "t-abc-analyze", "t-abc-execute")
    assert s.topic_partitions == 3 and s.topic_replication_factor == 1
    # every other setting keeps its value (topic_check_interval_s became a topic-like string)
    plain = make_settings(topic_partitions=3)
    renamed = {n for n in type(s).model_fields if getattr(s, n) != getattr(plain, n)}
    assert renamed == {n for n in type(s).model_fields if n.startswith(("topic_", "group_"))
                       and isinstance(getattr(plain, n), str)}
    assert s.topic_check_interval_s == plain.topic_check_interval_s
