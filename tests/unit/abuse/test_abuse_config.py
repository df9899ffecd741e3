"""The ``ratelimit``, ``anomaly`` and audit durability config: errors name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from infershield.config import load_config
from infershield.errors import ConfigError


def load(tmp_path: Path, data: dict[str, Any]) -> Any:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_config(p, env={})


def test_sections_load_with_types(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        {
            "ratelimit": {
                "backend": "redis",
                "redis_url": "redis://127.0.0.1:6390/0",
                "default": {"requests_per_s": 5, "tokens_per_s": 1000, "tokens_burst": 4000},
                "loopback": {"requests_per_s": 50},
                "models": {"big": {"requests_per_s": 1}},
                "replicas": 3,
            },
            "anomaly": {
                "enabled": True,
                "responses": {"score": ["log", "quarantine"]},
                "quarantine_s": 60,
            },
            "audit": {"path": "/tmp/x", "fsync": "always", "rotate_bytes": 1000000},
        },
    )
    assert cfg.ratelimit.default.tokens_burst == 4000.0
    assert cfg.ratelimit.models["big"].requests_per_s == 1.0
    assert cfg.ratelimit.loopback is not None and cfg.ratelimit.loopback.requests_per_s == 50
    assert cfg.anomaly.responses == {"score": ("log", "quarantine")}
    assert cfg.audit.fsync == "always"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"ratelimit": {"backend": "etcd"}}, "ratelimit.backend"),
        ({"ratelimit": {"default": {"requests_per_s": -1}}}, "ratelimit.default.requests_per_s"),
        ({"ratelimit": {"models": {"m": {"tokens_burst": ".nan"}}}}, "ratelimit.models.m"),
        ({"ratelimit": {"models": {"m": {"tokens_burst": -2}}}}, "ratelimit.models.m.tokens_burst"),
        ({"ratelimit": {"loopback": {"rps": 1}}}, "ratelimit.loopback.rps"),
        ({"ratelimit": {"replicas": 0}}, "ratelimit.replicas"),
        ({"ratelimit": {"on_error": "open"}}, "ratelimit.on_error"),
        ({"ratelimit": {"backend": "redis", "redis_url": "127.0.0.1:6379"}}, "ratelimit.redis_url"),
        ({"ratelimit": {"redis_timeout_s": 0}}, "ratelimit.redis_timeout_s"),
        ({"anomaly": {"alpha": 1.5}}, "anomaly.alpha"),
        ({"anomaly": {"z": 0}}, "anomaly.z"),
        ({"anomaly": {"responses": {"latency": ["log"]}}}, "anomaly.responses.latency"),
        ({"anomaly": {"responses": {"score": ["page"]}}}, "anomaly.responses.score[0]"),
        ({"anomaly": {"enabled": True, "default_response": ["webhook"]}}, "anomaly.webhook.url"),
        ({"anomaly": {"webhook": {"queue_size": 0}}}, "anomaly.webhook"),
        ({"audit": {"fsync": "sometimes"}}, "audit.fsync"),
        ({"audit": {"rotate_bytes": -1}}, "audit.rotate_bytes"),
        ({"audit": {"fsync_interval_s": 0}}, "audit.fsync_interval_s"),
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as ei:
        load(tmp_path, data)
    assert ei.value.message.startswith(field), ei.value.message


def test_old_rate_fields_keep_working_and_conflicts_say_what_replaces_them(
    tmp_path: Path,
) -> None:
    from infershield.abuse.control import AbuseControl
    from infershield.abuse.store import Bucket

    cfg = load(tmp_path, {"limits": {"rate_per_s": 3, "rate_burst": 6}})
    ctl = AbuseControl.from_config(cfg)
    assert ctl.limits.buckets("ipv4:10.0.0.1", "").requests == Bucket(3, 6)
    with pytest.raises(ConfigError, match=r"replaced by ratelimit\.default\.requests_per_s"):
        load(
            tmp_path,
            {"limits": {"rate_per_s": 3}, "ratelimit": {"default": {"requests_per_s": 5}}},
        )
