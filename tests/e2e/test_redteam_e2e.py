"""``infershield redteam --target``: a battery sent to a running firewall over Triton gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from firewall_support import INJECTION, config_data, free_port, write_config
from infershield.cli import main
from infershield.errors import ConfigError
from infershield.redteam.targets import GrpcTarget
from infershield.server.app import ServerThread

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def firewall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The firewall with its embedded MiniLM model and the keyword test policy (it blocks
    "ignore all previous instructions")."""
    cfg = write_config(
        tmp_path_factory.mktemp("rt") / "config.yaml", config_data(f"127.0.0.1:{free_port()}")
    )
    st = ServerThread(cfg)
    yield f"127.0.0.1:{st.start()}"
    st.stop(grace=0.5)


def test_grpc_target_sees_blocks_and_answers(firewall: str) -> None:
    target = GrpcTarget(firewall, "minilm")
    try:
        blocked, allowed = target.screen([INJECTION, "a cat sits on the mat"])
    finally:
        target.close()
    assert blocked.blocked and blocked.code == "PERMISSION_DENIED"
    assert not allowed.blocked and allowed.code == ""
    assert blocked.latency_ms > 0 and allowed.latency_ms > 0


def test_grpc_target_unknown_model(firewall: str) -> None:
    with pytest.raises(ConfigError, match="nope"):
        GrpcTarget(firewall, "nope")


def test_cli_against_the_endpoint(firewall: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    floors = tmp_path / "floors.yaml"
    # The keyword policy only knows one phrase: a leetspeak variant of it gets through.
    floors.write_text("cells:\n  override/none: 1.0\n  override/leetspeak: 1.0\n")
    report = tmp_path / "rt.md"
    rc = main(["redteam", "--target", firewall, "--model", "minilm", "--suite", "smoke",
               "--report", str(report), "--floors", str(floors)])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FLOOR cell override/leetspeak" in out and "override/none" not in out.split("FLOOR")[1]
    assert f"gRPC endpoint {firewall}, model minilm" in report.read_text()
