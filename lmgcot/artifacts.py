"""Where a run keeps what it made: the one place that names the files of a run directory.

    <run_dir>/results.json          every number of the run (`RunDir.results`)
    <run_dir>/samples.jsonl         a few predictions per method
    <run_dir>/<stage>/meta.json     the stage's fingerprint and whether it finished
    <run_dir>/<stage>/summary.json  its numbers (teacher: stats.json)
    <run_dir>/<stage>/student/      the exported student (distill, refine)
    <run_dir>/<stage>/checkpoints/  resumable training state, this run's own
    <run_dir>/teacher/<split>.jsonl the teacher's rationales
    <run_dir>/eval/<method>.jsonl   per-question predictions; eval/meta.json holds their fingerprints
    <run_dir>/eval/quality/<source>.jsonl  per-question aspect scores of a rationale source
    <run_dir>/eval/samples/<key>.jsonl     a student's sampled outputs, shared by the methods
                                           that sample it the same way (`lmgcot.eval.samples`)

The pipeline writes through these classes and `lmgcot-compare` reads through them.
"""

from __future__ import annotations

from pathlib import Path

from lmgcot.utils.io import read_json, replace_dir, write_json

# The pipeline's stages in running order (lmgcot.pipeline.stages holds them in this order).
STAGE_ORDER = ("teacher", "distill", "refine", "evaluate")
META = "meta.json"
SUMMARY = "summary.json"
RESULTS = "results.json"


class StageDir:
    """A stage's artifact directory and its meta.json protocol: the fingerprint of the config that
    made it, and whether it finished."""

    def __init__(self, path: Path, summary: str = SUMMARY):
        self.path = Path(path)
        self.name = self.path.name
        self.summary_file = self.path / summary

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def meta_file(self) -> Path:
        return self.path / META

    @property
    def student(self) -> Path:
        return self.path / "student"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    def meta(self) -> dict:
        return read_json(self.meta_file) if self.meta_file.exists() else {}

    def write_meta(self, meta: dict) -> None:
        write_json(self.meta_file, meta)

    @property
    def fingerprint(self) -> str | None:
        return self.meta().get("fingerprint")

    @property
    def done(self) -> bool:
        return bool(self.meta().get("done"))

    def mark_done(self, fingerprint: str) -> None:
        self.write_meta({"fingerprint": fingerprint, "done": True})

    def summary(self) -> dict:
        return read_json(self.summary_file)

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_file, summary)

    def export_student(self, model, tokenizer) -> None:
        """Save a model and its tokenizer as `student/`, replacing any older one whole."""
        tmp = self.path / "student.tmp"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, self.student)


class TeacherDir(StageDir):
    def __init__(self, path: Path):
        super().__init__(path, summary="stats.json")

    def rationales(self, split: str) -> Path:
        return self.path / f"{split}.jsonl"


class EvalDir(StageDir):
    """eval/: one prediction file per method, each with its own fingerprint in meta.json."""

    QUALITY = "quality"

    def predictions(self, method: str) -> Path:
        return self.path / f"{method}.jsonl"

    def method_fingerprint(self, method: str) -> str | None:
        return self.meta().get(method)

    def set_method_fingerprint(self, method: str, fingerprint: str) -> None:
        self.write_meta({**self.meta(), method: fingerprint})

    def quality(self, source: str) -> Path:
        return self.path / self.QUALITY / f"{source}.jsonl"

    def quality_files(self) -> list[Path]:
        return sorted((self.path / self.QUALITY).glob("*.jsonl"))

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"


class RunDir:
    """A run directory: its stages' artifacts and its results."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.teacher = TeacherDir(self.root / "teacher")
        self.distill = StageDir(self.root / "distill")
        self.refine = StageDir(self.root / "refine")
        self.eval = EvalDir(self.root / "eval")

    def stage(self, name: str) -> StageDir:
        return {"teacher": self.teacher, "distill": self.distill, "refine": self.refine}[name]

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    @property
    def overrides(self) -> Path:
        """The Hydra overrides that made the run (Hydra writes them)."""
        return self.root / ".hydra" / "overrides.yaml"
