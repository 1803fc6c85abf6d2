"""Objects the config builds from `_target_`, checked before any work rather than when a stage
builds them (the RL optimizer only after the teacher and the distillation).

Every `_target_` node must name an importable callable that takes its keys as arguments. The
optimizers and the scheduler are then built on a throwaway parameter, and the Trainer with no
logger, checkpoint or callback, so that the callable's own validation (torch's `Invalid learning
rate: -1`, Lightning's `Precision 'bogus' is invalid`) speaks before any stage runs; the error
names the key whose value it refused. The Trainer is built on this machine's CPU: the device a run
asks for is judged when the stage builds it (a run may be checked where it will not train). The
dataset and the large LM are left out: they are built before any work with their own one-line
errors. The launcher is built by Hydra before any job runs: its keys are typed by its plugin's
schema, and a value only joblib or SLURM judges (`hydra.launcher.n_jobs=0`) is not checked here.
"""

from __future__ import annotations

import inspect
import logging
import re
import warnings
from collections.abc import Callable
from typing import Any

from hydra._internal.utils import _locate  # get_object without its logged error line
from omegaconf import DictConfig, OmegaConf

# Partials built on a throwaway parameter (a scheduler on a throwaway optimizer), called as the
# stages call them.
OPTIMIZERS = ("distill.optimizer", "rl.optimizer")
SCHEDULERS = ("distill.scheduler",)
# Top-level groups built, and their arguments judged, elsewhere (see the module docstring); the
# trainer's keys are checked by `validate._trainer_arguments`, its values by building it here.
BUILT_ELSEWHERE = ("dataset", "large_lm", "trainer", "hydra")
# Trainer arguments that set process-wide torch flags when the Trainer is built: typed booleans,
# left out of the throwaway one.
GLOBAL_FLAGS = ("deterministic", "benchmark")
# Hydra's own keys of a `_target_` node, not arguments of the callable.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def target_problems(cfg: DictConfig, reported: list[str] = ()) -> list[str]:
    """One line per `_target_` node the run would fail to build, naming the key. Values of keys
    the `reported` lines already name (`trainer.max_epochs=-3: ...`) are left to their defaults:
    one line per bad value."""
    judged = {re.match(r"[^=:\s]*", line)[0] for line in reported}
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
            how = steps if key in SCHEDULERS else None
            out += _build_problems(key, node, call, how, adjust=_unjudged(key, judged))
    if any(key.startswith("trainer.") for key in bad):  # a nested node it could not build
        return out
    return out + _trainer_problems(cfg, judged)


def _unjudged(key: str, judged: set[str]) -> Callable[[dict], dict]:
    return lambda args: {a: v for a, v in args.items() if f"{key}.{a}" not in judged}


def _trainer_problems(cfg: DictConfig, judged: set[str]) -> list[str]:
    """The Trainer as the stages build it (their logger, checkpoint and callbacks left out), on
    this machine's CPU; the accelerator's name is checked against Lightning's."""
    node = OmegaConf.select(cfg, "trainer", default=None)
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return []
    if _signature_problems("trainer", node):  # unknown keys: reported by _trainer_arguments
        return []
    out = []
    accelerator = node.get("accelerator")
    if isinstance(accelerator, str) and accelerator not in ("cpu", "auto"):
        from pytorch_lightning.accelerators import AcceleratorRegistry

        allowed = sorted({"auto", "gpu", *AcceleratorRegistry.available_accelerators()})
        if accelerator not in allowed:
            out.append(f"trainer.accelerator={accelerator!r}: allowed values are {allowed}")

    def on_this_cpu(args: dict) -> dict:
        args = {
            k: v for k, v in _unjudged("trainer", judged)(args).items() if k not in GLOBAL_FLAGS
        }
        if args.get("accelerator") != "cpu":
            args.update(accelerator="cpu", devices=1)
        return args

    def call(f: Callable) -> Any:
        # Its notes on the devices and settings come when the stage builds it.
        quiet = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric")]
        levels = [lg.level for lg in quiet]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for lg in quiet:
                lg.setLevel(logging.WARNING)
            try:
                return f(logger=False, enable_checkpointing=False, callbacks=[])
            finally:
                for lg, level in zip(quiet, levels):
                    lg.setLevel(level)

    return out + _build_problems("trainer", node, call, None, adjust=on_this_cpu)


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
    key: str,
    node: DictConfig,
    call: Callable[[Callable], Any],
    steps: int | None,
    adjust: Callable[[dict], dict] | None = None,
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
    if adjust is not None:
        args = adjust(args)
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
        # Nested `_target_` nodes (trainer.strategy) are built as Hydra would, inside the try.
        built = {
            k: _instantiate(v) if isinstance(v, dict) and "_target_" in v else v
            for k, v in args.items()
        }
        call(lambda *a, **kw: fn(*a, **{**built, **kw}))
    except Exception as err:  # whatever the callable raises is its verdict on the arguments
        return _first_line(err)
    return None


def _instantiate(node: dict) -> Any:
    from hydra.utils import instantiate

    return instantiate(node)


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
