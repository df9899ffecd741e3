"""Builds pipelines from a validated :class:`~infershield.config.PolicyConfig`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from infershield.checks.base import Check, Stage, resolve
from infershield.config import CheckSpec, Config, OptionError, build
from infershield.errors import ConfigError
from infershield.pipeline import Pipeline, Step

if TYPE_CHECKING:
    from infershield.checks.output.prompt_leak import PromptLeakCheck

#: Message roles whose text is untrusted content (where indirect injection lives).
UNTRUSTED_ROLES: frozenset[str] = frozenset({"tool", "document"})
#: What the default untrusted pipeline adds to the input checks.
INDIRECT_INJECTION = CheckSpec(
    type="signatures",
    name="indirect_injection",
    options={"packs": ["injection", "indirect"], "block_severity": "medium"},
)
#: Added to the output pipeline when a policy does not place it (system messages and
#: canaries are guarded whatever the policy lists).
PROMPT_LEAK = CheckSpec(type="prompt_leak")


def build_check(spec: CheckSpec, stage: Stage, config: Config, where: str) -> Check:
    """Instantiate one check; every failure is a ConfigError naming ``where``."""
    try:
        cls = resolve(spec.type)
    except KeyError:
        raise ConfigError(f"{where}.type: unknown check type {spec.type!r}") from None
    except ImportError as exc:  # registered, but its module is not installed
        raise ConfigError(f"{where}.type: check type {spec.type!r} unavailable: {exc}") from None
    if stage not in cls.stages:
        raise ConfigError(f"{where}: check {spec.type!r} cannot run on {stage}")
    options = build(cls.Options, spec.options, f"{where}.options")
    factory = getattr(cls, "from_config", None)
    try:
        if factory is not None:
            check: Check = factory(spec.display_name, options, config)
        else:
            check = cls(spec.display_name, options)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    except OptionError as exc:
        raise ConfigError(f"{where}.options.{exc.field}: {exc.message}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{where}: cannot build check {spec.display_name!r}: {exc}") from None
    return check


def build_pipeline(
    specs: Sequence[CheckSpec],
    stage: Stage,
    config: Config,
    *,
    fail_fast: bool,
    section: str | None = None,
) -> Pipeline:
    """Build ``specs`` as ``stage`` checks; errors name ``policy.<section>[i]`` (the stage
    by default)."""
    steps: list[Step] = []
    names: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"policy.{section or stage}[{i}]"
        if not spec.enabled:
            continue
        if spec.display_name in names:
            raise ConfigError(f"{where}.name: duplicate check name {spec.display_name!r}")
        names.add(spec.display_name)
        steps.append(Step(build_check(spec, stage, config, where), spec.on_error))
    return Pipeline(steps, fail_fast=fail_fast)


def output_specs(config: Config) -> tuple[CheckSpec, ...]:
    """The output checks, plus ``prompt_leak`` when the policy does not place it."""
    p = config.policy
    if any(s.type == "prompt_leak" for s in p.output):
        return p.output
    return (*p.output, PROMPT_LEAK)


@dataclass(frozen=True)
class Policy:
    """The immutable, built policy: swapped whole on reload, never mutated."""

    config: Config
    input: Pipeline
    output: Pipeline
    #: Screens untrusted messages (``tool``, ``document``) of ``Infer``.
    untrusted: Pipeline
    #: Characters of a streamed output held back (``policy.stream_holdback_chars`` or
    #: derived from the output checks).
    stream_holdback: int

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        from infershield.stream import derive_holdback

        p = config.policy
        built: list[Pipeline] = []
        try:
            built.append(build_pipeline(p.input, "input", config, fail_fast=p.fail_fast))
            built.append(
                build_pipeline(output_specs(config), "output", config, fail_fast=p.fail_fast)
            )
            if p.untrusted is not None:
                built.append(
                    build_pipeline(
                        p.untrusted, "input", config, fail_fast=p.fail_fast, section="untrusted"
                    )
                )
            else:
                # The input checks themselves (a model is not loaded twice), then the rules.
                extra = build_check(
                    INDIRECT_INJECTION, "input", config, "policy.untrusted(default)"
                )
                steps = [*built[0].steps, Step(extra, INDIRECT_INJECTION.on_error)]
                built.append(Pipeline(steps, fail_fast=p.fail_fast))
        except Exception:
            for pipe in built:
                pipe.close()
            raise
        inp, out, untrusted = built
        needed = derive_holdback(c.max_match_chars() for c in out.checks)
        policy = cls(config, inp, out, untrusted, p.stream_holdback_chars or needed)
        if p.stream_holdback_chars and p.stream_holdback_chars < needed:
            policy.close()
            raise ConfigError(
                f"policy.stream_holdback_chars: {p.stream_holdback_chars} is shorter than the "
                f"hold-back derived from the output checks' longest match ({needed}); a match "
                "split across streamed responses could pass. Leave it 0 for the derived value"
            )
        return policy

    @property
    def prompt_leak(self) -> PromptLeakCheck | None:
        """The output pipeline's ``prompt_leak`` check, if enabled."""
        from infershield.checks.output.prompt_leak import PromptLeakCheck

        for c in self.output.checks:
            if isinstance(c, PromptLeakCheck):
                return c
        return None

    def close(self) -> None:
        self.input.close()
        self.output.close()
        shared = {id(c) for c in self.input.checks}
        for c in self.untrusted.checks:
            if id(c) not in shared:
                c.close()
