"""Objects the config builds from `_target_`, checked before any work rather than when a stage
builds them (the RL optimizer only after the teacher and the distillation).

Every `_target_` node must name an importable callable that takes its keys as arguments. The
optimizers and the scheduler are then built on a throwaway parameter, so that the callable's own
validation (torch's `Invalid learning rate: -1`) speaks before any stage runs; the error names the
key whose value it refused. The dataset, the large LM and the trainer are left out: the first two
are built before any work with their own one-line errors, the trainer's keys are checked in
`validate._trainer_arguments`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from hydra._internal.utils import _locate  # get_object without its logged error line
from omegaconf import DictConfig, OmegaConf

# Nodes built on a throwaway parameter: key -> how the stage calls the finished partial.
OPTIMIZERS = ("distill.optimizer", "rl.optimizer")
SCHEDULERS = ("distill.scheduler",)
# Top-level groups built, and their arguments judged, elsewhere (see the module docstring).
BUILT_ELSEWHERE = ("dataset", "large_lm", "trainer", "hydra")
# Hydra's own keys of a `_target_` node, not arguments of the callable.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def target_problems(cfg: DictConfig) -> list[str]:
    """One line per `_target_` node the run would fail to build, naming the key."""
    out, bad = [], set()
    for key, node in _target_nodes(cfg):
        problems = _signature_problems(key, node)
        if problems:
            bad.add(key)
        out += problems
    steps = _training_steps(cfg)
    calls: dict[str, Callable[[Callable], Any]] = {
        **dict.fromkeys(OPTIMIZERS, lambda f: f([_throwaway_parameter()])),
        **dict.fromkeys(SCHEDULERS, lambda f: f(_throwaway_optimizer(), num_training_steps=steps)),
    }
    for key, call in calls.items():
        node = OmegaConf.select(cfg, key, default=None)
        if isinstance(node, DictConfig) and "_target_" in node and key not in bad:
            out += _build_problems(key, node, call, steps if key in SCHEDULERS else None)
    return out


def _target_nodes(node: DictConfig, path: str = ""):
    """(dotted key, node) of every `_target_` node, outside BUILT_ELSEWHERE's top-level nodes
    (nested ones, such as trainer.strategy, are visited)."""
    if "_target_" in node and path and path[:-1] not in BUILT_ELSEWHERE:
        yield path[:-1], node
    for key in node:
        if not path and key == "hydra":
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from _target_nodes(child, f"{path}{key}.")


def _arguments(node: DictConfig) -> list[str]:
    return [str(k) for k in node if k not in HYDRA_KEYS]


def _signature_problems(key: str, node: DictConfig) -> list[str]:
    target = node._get_node("_target_")._value()
    try:
        obj = _locate(str(target))
    except Exception as err:  # ImportError, AttributeError, or Hydra's wrapping of them
        # Hydra's message: "Error loading 'x':", the import error, "Are you sure ...?".
        lines = [line.strip().rstrip(":") for line in str(err).splitlines() if line.strip()]
        reason = "; ".join(line for line in lines if not line.startswith("Are you sure"))
        return [f"{key}._target_={target}: cannot be imported ({reason})"]
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature: its call will judge
        return []
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return []
    names = {p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL}
    return [
        f"{key}.{arg}: not an argument of {target}" for arg in _arguments(node) if arg not in names
    ]


def _build_problems(
    key: str, node: DictConfig, call: Callable[[Callable], Any], steps: int | None
) -> list[str]:
    """`call(partial)` with the configured arguments. When it fails, the arguments to blame are
    those whose removal makes it pass; else those that fail on their own (the same way as all of
    them together, where it fails without any); else the node as a whole."""
    try:
        args = OmegaConf.to_container(node, resolve=True)
    except Exception:  # an interpolation only a Hydra run resolves: judged when built
        return []
    target = args.pop("_target_")
    args = {k: v for k, v in args.items() if k not in HYDRA_KEYS}
    error = _fails(target, args, call)
    if error is None:
        return []
    blamed = {a: error for a in args if _fails(target, _without(args, a), call) is None}
    if not blamed:
        bare = _fails(target, {}, call)
        alone = {a: _fails(target, {a: args[a]}, call) for a in args}
        blamed = {
            a: e for a, e in alone.items() if e not in (None, bare) and (bare is None or e == error)
        }
    if not blamed:
        how = f" (called as {target}(optimizer, num_training_steps={steps}))" if steps else ""
        return [f"{key}: {target} cannot be built from these arguments{how}: {error}"]
    return [f"{key}.{a}={args[a]}: {target} refuses it: {e}" for a, e in blamed.items()]


def _fails(target: str, args: dict, call: Callable[[Callable], Any]) -> str | None:
    """The error of building `target` with `args` as `call` does, or None when it builds."""
    fn = _locate(target)
    try:
        call(lambda *a, **kw: fn(*a, **{**args, **kw}))
    except Exception as err:  # whatever the callable raises is its verdict on the arguments
        return _first_line(err)
    return None


def _without(args: dict, name: str) -> dict:
    return {k: v for k, v in args.items() if k != name}


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _throwaway_parameter():
    import torch

    return torch.nn.Parameter(torch.zeros(1))


def _throwaway_optimizer():
    import torch

    return torch.optim.SGD([_throwaway_parameter()], lr=0.1)


def _training_steps(cfg: DictConfig) -> int:
    """What the distill stage passes as num_training_steps, near enough: trainer.max_steps."""
    steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
    return steps if isinstance(steps, int) and steps > 0 else 1000
