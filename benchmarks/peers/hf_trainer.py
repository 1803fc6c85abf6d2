"""Peer runner: the throughput workload (benchmarks/workload.py) fine-tuned by Hugging Face's
`Seq2SeqTrainer` on CPU; one sampling strategy per process; prints one JSON line.

Run by benchmarks/throughput.py under an interpreter that has transformers, accelerate and
datasets (`--peer-python`); it needs nothing from lmgcot.

    PEER_PYTHON benchmarks/peers/hf_trainer.py --sampling group_by_length --steps 60
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workload import make_pairs, rate_fields, tiny_t5  # noqa: E402


def measure(args: argparse.Namespace) -> dict:
    import torch
    import transformers
    from datasets import Dataset
    from transformers import (
        DataCollatorForSeq2Seq,
        PrinterCallback,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
        set_seed,
    )

    torch.set_num_threads(args.threads)
    set_seed(args.seed)
    model, tokenizer = tiny_t5(args.seed)
    pairs = make_pairs(args.seed)
    data = Dataset.from_dict({"source": [s for s, _ in pairs], "target": [t for _, t in pairs]})
    data = data.map(
        lambda b: tokenizer(b["source"], text_target=b["target"]),
        batched=True,
        remove_columns=["source", "target"],
    )
    # Tokens are counted on the batches of measured steps only (after the warm-up steps).
    tally = {"real": 0, "padded": 0, "ends": []}

    class Counted(Seq2SeqTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            if len(tally["ends"]) >= args.warmup:
                labels = inputs["labels"]
                tally["real"] += int(inputs["attention_mask"].sum()) + int((labels != -100).sum())
                tally["padded"] += inputs["input_ids"].numel() + labels.numel()
            return super().training_step(model, inputs, num_items_in_batch)

    class StepEnds(TrainerCallback):
        def on_step_end(self, train_args, state, control, **kwargs):
            tally["ends"].append(time.perf_counter())

    train_args = Seq2SeqTrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-trainer-"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        learning_rate=3e-4,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        seed=args.seed,
        data_seed=args.seed,
        train_sampling_strategy=args.sampling,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = Counted(
        model=model,
        args=train_args,
        train_dataset=data,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
        callbacks=[StepEnds()],
    )
    trainer.remove_callback(PrinterCallback)  # stdout carries the JSON line only
    out = trainer.train()
    return {
        "bench": "hf_seq2seq_trainer",
        "sampling": args.sampling,
        **rate_fields(tally, args.warmup),
        "train_loss": round(out.training_loss, 4),
        "params": sum(p.numel() for p in model.parameters()),
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sampling", choices=["group_by_length", "random"], required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5, help="first steps not counted")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    print(json.dumps(measure(parser.parse_args())), flush=True)


if __name__ == "__main__":
    main()
