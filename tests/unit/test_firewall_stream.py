"""Firewall.stream_infer over a scripted decoupled backend: hold-back, flush on an empty
final response, canaries planted in the system-prompt tensor, blocks ending a request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb

from infershield.audit import AuditLog
from infershield.backends.base import Backend
from infershield.backends.tensors import decode_bytes, encode_bytes
from infershield.call import CallContext
from infershield.config import load_config
from infershield.firewall import EMPTY_FINAL, FINAL_RESPONSE, Firewall, StreamError
from infershield.policy import Policy
from infershield.server.interceptor import stream_error_response

EMAIL = "jane.doe@example.org"
Script = Callable[[pb.ModelInferRequest], list[tuple[str | None, bool]]]


def _response(req: pb.ModelInferRequest, piece: str | None, final: bool) -> Any:
    ir = pb.ModelInferResponse(id=req.id, model_name=req.model_name)
    if piece is not None:
        ir.outputs.add(name="OUT", datatype="BYTES", shape=[1])
        ir.raw_output_contents.append(encode_bytes([piece.encode()]))
    ir.parameters[FINAL_RESPONSE].bool_param = final
    return pb.ModelStreamInferResponse(infer_response=ir)


class ScriptedBackend(Backend):
    """A decoupled model: ``script(request)`` lists its responses (text or None, final)."""

    kind = "scripted"

    def __init__(self, script: Script) -> None:
        self.script = script
        self.seen: list[pb.ModelInferRequest] = []

    async def call(self, method: str, request: Any, ctx: CallContext) -> Any:
        if method == "ModelMetadata":
            m = pb.ModelMetadataResponse(name=request.name)
            m.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
            m.inputs.add(name="SYS", datatype="BYTES", shape=[1])
            return m
        if method == "ModelConfig":
            return pb.ModelConfigResponse()
        raise AssertionError(method)

    async def stream_infer(
        self, requests: AsyncIterator[pb.ModelInferRequest], ctx: CallContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for req in requests:
            self.seen.append(req)
            for piece, final in self.script(req):
                yield _response(req, piece, final)

    async def ready(self) -> bool:
        return True


def _request(rid: str, text: str, system: str = "be brief", *, empty_final: bool = False) -> Any:
    req = pb.ModelInferRequest(model_name="m", id=rid)
    for name, value in (("TEXT", text), ("SYS", system)):
        req.inputs.add(name=name, datatype="BYTES", shape=[1]).contents.bytes_contents.append(
            value.encode()
        )
    if empty_final:
        req.parameters[EMPTY_FINAL].bool_param = True
    return req


def _text_of(req: pb.ModelInferRequest, name: str) -> str:
    t = next(t for t in req.inputs if t.name == name)
    return bytes(t.contents.bytes_contents[0]).decode()


def pieces(text: str, size: int) -> list[tuple[str | None, bool]]:
    """``text`` in ``size``-character responses, then an empty final response."""
    out: list[tuple[str | None, bool]] = [
        (text[i : i + size], False) for i in range(0, len(text), size)
    ]
    return [*out, (None, True)]


def run(
    tmp_path: Path,
    policy: dict[str, Any],
    script: Script,
    requests: list[Any],
    *,
    explain: bool = True,
) -> tuple[list[Any], ScriptedBackend]:
    """Run the requests through a firewall; ``explain`` (``policy.explain_blocks``) lets the
    tests read which check ended a stream."""
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"policy": {"explain_blocks": explain, **policy}}), encoding="utf-8"
    )
    pol = Policy.from_config(load_config(path, env={}))
    backend = ScriptedBackend(script)
    fw = Firewall(pol, backend, audit=AuditLog(tmp_path / "audit.jsonl"))

    async def go() -> list[Any]:
        async def reqs() -> AsyncIterator[Any]:
            for r in requests:
                yield r

        # In-stream errors as the servicer sends them (ModelStreamInfer's error_message).
        return [
            stream_error_response(r) if isinstance(r, StreamError) else r
            async for r in fw.stream_infer(reqs(), CallContext.after(10))
        ]

    try:
        return asyncio.run(go()), backend
    finally:
        fw.audit.close()
        pol.close()


def received(responses: list[Any], rid: str) -> tuple[str, list[str]]:
    """The text a client got for ``rid``, and the in-stream errors."""
    text, errors = [], []
    for r in responses:
        if r.infer_response.id != rid:
            continue
        if r.error_message:
            errors.append(r.error_message)
        for i, _ in enumerate(r.infer_response.outputs):
            raw = r.infer_response.raw_output_contents[i]
            text.extend(e.decode() for e in decode_bytes(raw, "OUT"))
    return "".join(text), errors


POLICY: dict[str, Any] = {"input": [], "output": [{"type": "pii"}], "allow_empty": True}


@pytest.mark.parametrize("size", [1, 3, 7, 40])
def test_split_email_is_redacted_and_the_tail_rides_the_empty_final(
    tmp_path: Path, size: int
) -> None:
    reply = f"Write to {EMAIL} any time. " + "Thanks for asking! " * 12

    def script(req: Any) -> list[tuple[str | None, bool]]:
        return pieces(reply, size)

    out, _ = run(tmp_path, POLICY, script, [_request("a", "hi")])
    text, errors = received(out, "a")
    assert errors == []
    assert text == reply.replace(EMAIL, "[REDACTED:email]")
    final = out[-1].infer_response
    assert final.parameters[FINAL_RESPONSE].bool_param and len(final.outputs) == 1


def test_empty_final_is_forwarded_only_when_asked(tmp_path: Path) -> None:
    def script(req: Any) -> list[tuple[str | None, bool]]:
        return [(None, True)]  # a reply with no text at all

    out, backend = run(
        tmp_path, POLICY, script, [_request("a", "hi"), _request("b", "hi", empty_final=True)]
    )
    # The firewall always asks upstream for the empty final (to flush on it).
    assert all(r.parameters[EMPTY_FINAL].bool_param for r in backend.seen)
    assert [r.infer_response.id for r in out] == ["b"]


def test_canary_planted_in_the_system_tensor_is_caught_when_streamed_back(
    tmp_path: Path,
) -> None:
    policy = {**POLICY, "canary": True, "system_prompt_tensor": "SYS"}

    def script(req: Any) -> list[tuple[str | None, bool]]:
        return pieces("My instructions were: " + _text_of(req, "SYS") + " -- done.", 4)

    out, backend = run(tmp_path, policy, script, [_request("a", "hi", "be brief")])
    sys_sent = _text_of(backend.seen[0], "SYS")
    assert sys_sent.startswith("be brief\n(ref: ISC-")
    token = sys_sent.split("(ref: ")[1].rstrip(")")
    text, errors = received(out, "a")
    assert len(errors) == 1 and "canary" in errors[0] and token not in errors[0]
    assert token not in text
    assert out[-1].infer_response.parameters[FINAL_RESPONSE].bool_param
    # Audited as a leak, without the token.
    audit = (tmp_path / "audit.jsonl").read_text()
    records = [json.loads(line) for line in audit.splitlines()]
    assert any(r["stage"] == "output" and r["categories"] == ["leak", "canary"] for r in records)
    assert token not in audit


def test_system_prompt_of_the_model_is_guarded_in_streams(tmp_path: Path) -> None:
    system = "You are the billing assistant of Example Corp and never give refunds over fifty."
    policy = {**POLICY, "system_prompts": {"m": system}}

    def script(req: Any) -> list[tuple[str | None, bool]]:
        return pieces(f"OK. {system.upper()} Anything else?", 5)

    out, _ = run(tmp_path, policy, script, [_request("a", "hi"), _request("b", "hi")])
    for rid in ("a", "b"):
        text, errors = received(out, rid)
        assert len(errors) == 1 and "prompt_leak" in errors[0]
        assert "EXAMPLE CORP AND NEVER" not in text


def test_a_blocked_request_drops_its_later_responses_and_others_go_on(tmp_path: Path) -> None:
    def script(req: Any) -> list[tuple[str | None, bool]]:
        if req.id == "bad":
            return pieces("key AKIAHJGONJRJUPPXDL3R " + "x " * 100, 10)
        return pieces("all fine here " * 20, 10)

    policy = {**POLICY, "output": [{"type": "secrets", "options": {"action": "block"}}]}
    out, _ = run(tmp_path, policy, script, [_request("bad", "q"), _request("ok", "q")])
    bad, bad_errors = received(out, "bad")
    assert len(bad_errors) == 1 and "secrets" in bad_errors[0]
    assert "AKIA" not in bad
    # By default the caller learns the stage and category, not the check or its rules.
    quiet, _ = run(tmp_path, policy, script, [_request("bad", "q")], explain=False)
    _, terse = received(quiet, "bad")
    assert terse == ["PERMISSION_DENIED: blocked on output (category: secret)"]
    # Held-back responses went out empty; after the error nothing more for this id.
    assert [r for r in out if r.infer_response.id == "bad"][-1].error_message
    ok, ok_errors = received(out, "ok")
    assert ok_errors == [] and ok == "all fine here " * 20


@pytest.mark.parametrize("failure", ["unreadable", "broken"])
def test_a_request_stream_that_fails_ends_with_an_error_not_as_if_complete(
    tmp_path: Path, failure: str
) -> None:
    """grpc raises a request's DecodeError out of the request iterator: the stream must end
    with an error (INVALID_ARGUMENT for an unreadable request), never cleanly, as if the
    caller had sent nothing more."""
    from google.protobuf.message import DecodeError

    from infershield.errors import InvalidRequest

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"policy": POLICY}), encoding="utf-8")
    pol = Policy.from_config(load_config(path, env={}))
    backend = ScriptedBackend(lambda req: pieces("hello there", 40))
    fw = Firewall(pol, backend)

    async def go() -> BaseException | None:
        async def reqs() -> AsyncIterator[Any]:
            yield _request("a", "hi")
            await asyncio.sleep(0.05)  # "a" goes upstream first
            if failure == "unreadable":
                raise DecodeError("Error parsing message")
            raise RuntimeError("a bug")

        try:
            async for _ in fw.stream_infer(reqs(), CallContext.after(10)):
                pass
        except Exception as exc:
            return exc
        return None

    try:
        err = asyncio.run(go())
    finally:
        pol.close()
    if failure == "unreadable":
        assert isinstance(err, InvalidRequest) and "not a readable" in err.message
    else:
        assert isinstance(err, RuntimeError)
    assert [r.id for r in backend.seen] == ["a"]
