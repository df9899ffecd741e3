"""Builds pipelines from a validated :class:`~infershield.config.PolicyConfig`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from infershield.checks.base import Check, Stage, resolve
from infershield.config import CheckSpec, Config, OptionError, build
from infershield.errors import ConfigError
from infershield.pipeline import Pipeline, Step


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
    specs: Sequence[CheckSpec], stage: Stage, config: Config, *, fail_fast: bool
) -> Pipeline:
    steps: list[Step] = []
    names: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"policy.{stage}[{i}]"
        if not spec.enabled:
            continue
        if spec.display_name in names:
            raise ConfigError(f"{where}.name: duplicate check name {spec.display_name!r}")
        names.add(spec.display_name)
        steps.append(Step(build_check(spec, stage, config, where), spec.on_error))
    return Pipeline(steps, fail_fast=fail_fast)


@dataclass(frozen=True)
class Policy:
    """The immutable, built policy: swapped whole on reload, never mutated."""

    config: Config
    input: Pipeline
    output: Pipeline

    @classmethod
    def from_config(cls, config: Config) -> Policy:
        p = config.policy
        inp = build_pipeline(p.input, "input", config, fail_fast=p.fail_fast)
        try:
            out = build_pipeline(p.output, "output", config, fail_fast=p.fail_fast)
        except Exception:
            inp.close()
            raise
        return cls(config, inp, out)

    def close(self) -> None:
        self.input.close()
        self.output.close()
