"""The pipeline's stages, in the order they run. Adding a stage is one module and one entry."""

from lmgcot.pipeline.stages.distill import DISTILL
from lmgcot.pipeline.stages.evaluate import EVALUATE
from lmgcot.pipeline.stages.refine import REFINE
from lmgcot.pipeline.stages.teacher import TEACHER

STAGES = {s.name: s for s in (TEACHER, DISTILL, REFINE, EVALUATE)}
