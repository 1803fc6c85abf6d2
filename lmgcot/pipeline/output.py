"""How a run's results leave it: the printed table, the loggers' metrics."""

from __future__ import annotations

from lmgcot.eval.methods import ORACLES, RL_METHODS


def flat_metrics(results: dict) -> dict[str, float]:
    out = {}
    for method, m in results["methods"].items():
        for k in ("em", "f1", "vote_share"):
            if k in m:
                out[f"test/{method}/{k}"] = m[k]
    for k in ("calls", "cache_hits", "input_tokens", "output_tokens"):
        out[f"llm/{k}"] = results["llm"][k]
    return out


def log_results(loggers: list, results: dict, results_file) -> None:
    for lg in loggers:
        lg.log_metrics(flat_metrics(results))
        lg.save()
        if type(lg).__name__ == "WandbLogger":
            # The whole results file travels with the W&B run.
            lg.experiment.save(str(results_file), base_path=str(results_file.parent), policy="now")


def finish_wandb(loggers: list) -> None:
    if any(type(lg).__name__ == "WandbLogger" for lg in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()


def format_results_table(results: dict) -> str:
    refine = results.get("refine") or {}
    # When refine kept the distilled student, the lm_guided_rl rows are the KD student's: say so.
    kept = refine.get("selected") == "distilled"
    rows = [("method", "EM", "F1", "n")]
    # Oracles read the gold answer: listed apart, under their own rule, after the methods.
    names = [n for n in results["methods"] if n not in ORACLES]
    bounds = [n for n in results["methods"] if n in ORACLES]
    for name in names + bounds:
        m = results["methods"][name]
        mark = "*" if kept and name in RL_METHODS else ""
        rows.append((name + mark, f"{m['em']:.3f}", f"{m['f1']:.3f}", str(m["n"])))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    if bounds:
        lines.insert(len(names) + 2, "-" * len(lines[0]) + " bound: chooses with the gold answer")
    if kept and set(RL_METHODS) & set(results["methods"]):
        reason = (refine.get("selection") or {}).get("reason", "no val evaluation beat it")
        lines.append(f"* the distilled student: refine exported it unchanged ({reason})")
    llm = results["llm"]
    usage = (
        f"large LM: {llm['calls']} calls, {llm['cache_hits']} cache hits, "
        f"{llm['input_tokens']} input / {llm['output_tokens']} output tokens"
    )
    if llm.get("cost_usd") is not None:  # null for local and simulated backends
        usage += f", ${llm['cost_usd']:.4f}"
    lines.append(usage)
    return "\n".join(lines)
