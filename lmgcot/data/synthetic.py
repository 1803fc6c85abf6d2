"""A seeded generator of multi-hop questions over a made-up world: the offline default dataset.

Names come from one invented inventory per entity type (`names=pooled`, the default) or are made up
for every question (`names=fresh`); either way the facts are drawn afresh for every question, so a
student cannot memorise them and must read its context.
Facts are written with the sentence templates in `RELATIONS`; the `simulated` large LM reads the same
templates back (see `lmgcot.llm.simulated`), which is what lets it reason over these contexts.

Question types:
  bridge      "Where was the director of Film X born?"   X -directed_by-> P -born_in-> City
  comparison  "Which film came out first, X or Y?"        compare the two release years
  yes/no      "Were P and Q born in the same city?"      compare the two birthplaces

Each example has two gold paragraphs and `n_distractors` paragraphs about other entities: for bridge
questions they state the second hop for other people or places (a reader who loses the chain lands
on a plausible wrong answer), for comparisons they state other kinds of facts.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from lmgcot.data.base import QADataset, split_sizes
from lmgcot.data.example import Example, Paragraph, Splits, SupportingFact
from lmgcot.errors import ConfigError


@dataclass(frozen=True)
class Relation:
    """A relation and the sentences that state it: `template` is how contexts state it, and each of
    `variants` is another way a writer (the `simulated` teacher) may put it. All have {s} (subject)
    and {o} (object)."""

    name: str
    template: str
    variants: tuple[str, ...] = ()

    @property
    def phrasings(self) -> tuple[str, ...]:
        return (self.template, *self.variants)

    def render(self, s: str, o: str, phrasing: int = 0) -> str:
        return self.phrasings[phrasing].format(s=s, o=o)

    @property
    def pattern(self) -> re.Pattern:
        return self.patterns[0]

    @property
    def patterns(self) -> tuple[re.Pattern, ...]:
        return tuple(_template_pattern(t) for t in self.phrasings)


def _template_pattern(template: str) -> re.Pattern:
    parts = re.split(r"(\{s\}|\{o\})", template)
    rx = "".join(
        "(?P<s>.+?)" if p == "{s}" else "(?P<o>.+?)" if p == "{o}" else re.escape(p) for p in parts
    )
    return re.compile(rx.rstrip(r"\.") + r"\.?$")


# The first sentence of each relation is the one contexts use; the others are paraphrases a writer
# may use instead (at least three ways to say each fact, as large LMs vary their wording).
RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in (
        Relation(
            "directed_by",
            "{s} is a film directed by {o}.",
            ("{s} was directed by {o}.", "The director of {s} is {o}.", "{o} directed {s}."),
        ),
        Relation(
            "released",
            "{s} came out in {o}.",
            ("{s} was released in {o}.", "The release year of {s} is {o}."),
        ),
        Relation(
            "born_in",
            "{s} was born in {o}.",
            ("{s} is from {o}.", "The birthplace of {s} is {o}."),
        ),
        Relation(
            "produced_by",
            "{s} was produced by the studio {o}.",
            ("{s} is a production of {o}.", "The studio {o} produced {s}."),
        ),
        Relation(
            "founded_by",
            "{s} was founded by {o}.",
            ("The founder of {s} is {o}.", "{o} founded {s}."),
        ),
        Relation(
            "located_in",
            "{s} is a city in {o}.",
            ("{s} lies in {o}.", "{s} is located in the country {o}."),
        ),
    )
}

# Bridge questions: (question template over the start entity, first relation, second relation).
BRIDGES = (
    ("Where was the director of {x} born?", "directed_by", "born_in"),
    ("Who founded the studio that produced {x}?", "produced_by", "founded_by"),
    ("In which country was {x} born?", "born_in", "located_in"),
)
COMPARISONS = (("Which film came out first, {x} or {y}?", "released"),)
YES_NO = (("Were {x} and {y} born in the same city?", "born_in"),)

QUESTION_TYPES = ("bridge", "comparison", "yes_no")
NAME_MODES = ("pooled", "fresh")
ENTITY_TYPES = ("person", "film", "studio", "city", "country")

_ONSETS = "b c d f g h k l m n p r s t v z br dr kr st tr th sh".split()
_VOWELS = "a e i o u ai ei ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "m"]


class SyntheticMultiHop(QADataset):
    """Seeded synthetic multi-hop QA. Sizes come from n_train/n_val/n_test; `type_mix` weights the
    three question types; the same seed always produces the same examples."""

    name = "synthetic"

    def __init__(
        self,
        n_train: int = 800,
        n_val: int = 100,
        n_test: int = 200,
        n_distractors: int = 2,
        type_mix: dict | None = None,
        names: str = "pooled",
        pool_size: int = 200,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if names not in NAME_MODES:
            raise ConfigError(f"dataset.names={names!r}: allowed values are {NAME_MODES}")
        if names == "pooled" and int(pool_size) < 20:
            raise ConfigError(f"dataset.pool_size={pool_size}: must be >= 20")
        self.sizes = split_sizes(n_train, n_val, n_test)
        if int(n_distractors) < 0:
            raise ConfigError(f"dataset.n_distractors={n_distractors}: must be >= 0")
        mix = dict(
            type_mix
            if type_mix is not None
            else {"bridge": 0.5, "comparison": 0.25, "yes_no": 0.25}
        )
        unknown = set(mix) - set(QUESTION_TYPES)
        if unknown or not mix or any(float(w) < 0 for w in mix.values()) or sum(mix.values()) <= 0:
            raise ConfigError(
                f"dataset.type_mix={mix}: keys from {QUESTION_TYPES}, non-negative, not all zero"
            )
        self.n_distractors = int(n_distractors)
        self.type_mix = {k: float(v) for k, v in mix.items()}
        self.pools = _name_pools(self.seed, int(pool_size)) if names == "pooled" else None

    def load_splits(self) -> Splits:
        out = {}
        for offset, (split, size) in enumerate(self.sizes.items()):
            rng = random.Random(f"{self.seed}:{split}:{offset}")
            out[split] = [self._example(rng, f"syn-{split}-{i:05d}") for i in range(size)]
        return self.cap(Splits(out["train"], out["val"], out["test"]))

    def _example(self, rng: random.Random, ex_id: str) -> Example:
        names = _NameMaker(rng, self.pools)
        kinds, weights = zip(*self.type_mix.items())
        kind = rng.choices(kinds, weights=weights)[0]
        if kind == "bridge":
            return _bridge(rng, names, ex_id, self.n_distractors)
        if kind == "comparison":
            return _comparison(rng, names, ex_id, self.n_distractors)
        return _yes_no(rng, names, ex_id, self.n_distractors)


class _NameMaker:
    """Distinct invented names within one example: drawn from `pools` (a fixed inventory per entity
    type) when given, otherwise made up fresh."""

    def __init__(self, rng: random.Random, pools: dict[str, list[str]] | None = None):
        self.rng = rng
        self.pools = pools
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            w = "".join(
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables)
            ) + self.rng.choice(_CODAS)
            w = w.capitalize()
            if w not in self.used:
                self.used.add(w)
                return w

    def make(self, entity_type: str) -> str:
        if self.pools is not None:
            while True:
                name = self.rng.choice(self.pools[entity_type])
                if name not in self.used:
                    self.used.add(name)
                    return name
        return self.fresh(entity_type)

    def fresh(self, entity_type: str) -> str:
        if entity_type == "person":
            return f"{self.word(2)} {self.word(2)}"
        if entity_type == "film":
            return f"{self.rng.choice(_FILM_WORDS)} {self.word(2)}"
        if entity_type == "studio":
            return f"{self.word(2)} {self.rng.choice(_STUDIO_WORDS)}"
        return self.word(self.rng.choice((2, 3)))  # city, country


def _name_pools(seed: int, size: int) -> dict[str, list[str]]:
    """One inventory of `size` invented names per entity type, shared by every split, so that all
    names occur in training; which facts hold is still drawn afresh for every question."""
    maker = _NameMaker(random.Random(f"world:{seed}"))
    return {t: [maker.fresh(t) for _ in range(size)] for t in ENTITY_TYPES}


_FILM_WORDS = ("Night of", "Return to", "The", "Song of", "Beyond", "Letters from")
_STUDIO_WORDS = ("Pictures", "Studios", "Films")
RELATION_TYPES = {  # entity type of the subject and object of each relation
    "directed_by": ("film", "person"),
    "released": ("film", "year"),
    "born_in": ("person", "city"),
    "produced_by": ("film", "studio"),
    "founded_by": ("studio", "person"),
    "located_in": ("city", "country"),
}


def _sentence(rel: str, s: str, o: str) -> str:
    return RELATIONS[rel].render(s, o)


def _chain(names: _NameMaker, r1: str, r2: str) -> tuple[str, str, str]:
    x = names.make(RELATION_TYPES[r1][0])
    bridge = names.make(RELATION_TYPES[r1][1])
    answer = names.make(RELATION_TYPES[r2][1])
    return x, bridge, answer


def _bridge(rng, names: _NameMaker, ex_id: str, n_distractors: int) -> Example:
    question_t, r1, r2 = rng.choice(BRIDGES)
    x, bridge, answer = _chain(names, r1, r2)
    gold = [
        Paragraph(x, (_sentence(r1, x, bridge),)),
        Paragraph(bridge, (_sentence(r2, bridge, answer),)),
    ]
    # Distractors state the second hop for other entities, so a reader who loses the chain still
    # finds a plausible answer of the right type.
    distractors = []
    for _ in range(n_distractors):
        db, da = names.make(RELATION_TYPES[r2][0]), names.make(RELATION_TYPES[r2][1])
        distractors.append(Paragraph(db, (_sentence(r2, db, da),)))
    context = gold + distractors
    rng.shuffle(context)
    return Example(
        id=ex_id,
        question=question_t.format(x=x),
        answer=answer,
        context=tuple(context),
        supporting_facts=(SupportingFact(x, 0), SupportingFact(bridge, 0)),
        type="bridge",
    )


def _comparison(rng, names: _NameMaker, ex_id: str, n_distractors: int) -> Example:
    question_t, rel = rng.choice(COMPARISONS)
    x, y = names.make("film"), names.make("film")
    ya, yb = rng.sample(range(1921, 2021), 2)
    context = [
        Paragraph(x, (_sentence(rel, x, str(ya)),)),
        Paragraph(y, (_sentence(rel, y, str(yb)),)),
    ]
    for _ in range(n_distractors):  # other films, other facts
        d = names.make("film")
        context.append(Paragraph(d, (_sentence("directed_by", d, names.make("person")),)))
    gold_titles = (x, y)
    rng.shuffle(context)
    return Example(
        id=ex_id,
        question=question_t.format(x=x, y=y),
        answer=x if ya < yb else y,
        context=tuple(context),
        supporting_facts=tuple(SupportingFact(t, 0) for t in gold_titles),
        type="comparison",
    )


def _yes_no(rng, names: _NameMaker, ex_id: str, n_distractors: int) -> Example:
    question_t, rel = rng.choice(YES_NO)
    x, y = names.make("person"), names.make("person")
    cities = [names.make("city") for _ in range(2)]
    same = rng.random() < 0.5
    cx, cy = (cities[0], cities[0]) if same else (cities[0], cities[1])
    context = [Paragraph(x, (_sentence(rel, x, cx),)), Paragraph(y, (_sentence(rel, y, cy),))]
    for _ in range(n_distractors):  # other cities, other facts
        c = names.make("city")
        context.append(Paragraph(c, (_sentence("located_in", c, names.make("country")),)))
    rng.shuffle(context)
    return Example(
        id=ex_id,
        question=question_t.format(x=x, y=y),
        answer="yes" if same else "no",
        context=tuple(context),
        supporting_facts=(SupportingFact(x, 0), SupportingFact(y, 0)),
        type="yes_no",
    )
