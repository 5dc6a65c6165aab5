"""Synthetic knowledge with nonsense words, after Lampinen et al. 2025 (arXiv 2505.00661).

Facts use made-up entity names so the model cannot know them beforehand; each fact has a known reversal,
so generated augmentations and generalization probes can be checked exactly.

Three benchmark datasets (:data:`DATASETS`, built with :func:`build_dataset`) turn such facts into training
documents plus held-out probes:

- ``reversal``: comparative facts ("Glon are more dangerous than femp."), each in several short articles;
  probes ask the fact as stated (``verbatim``) and from the other side (``reversal``).
- ``syllogism``: pairs of premises ("All glon are femp. No femp are zaik."); probes ask which of three
  conclusions follows (``syllogism``).
- ``semantic``: a hierarchy of animal categories with properties that members inherit; probes ask stated
  facts in other words (``rephrase``), from the other side (``reversal``), one step of inheritance
  (``syllogism``), two steps (``multi-hop``) and properties of a category whose own properties are never
  stated (``holdout``).

A probe is scored by the summed log-likelihood of each choice as a continuation of its question (the text
scored is ``question + " " + choice``), so questions are cloze statements written in the documents' style.
Probes are balanced against the shortcuts a small model takes: wherever the design allows, probes come in
mirrored pairs with the same choice list and swapped answers, so every choice string is the answer exactly
as often as it is a distractor, the answer sits at each position equally often and a model that scores only
the choices (name priors, lengths, positions) gets exactly chance.

Every probe also has a chat form: a natural question (``chat_question``) and every answer the KB makes
true (``answers``, the choice first), e.g. "Which animals are femp less dangerous than?" -> ["glon"].

Every document carries its structured content under ``metadata["synthetic"]``; :func:`probes_from_documents`
rebuilds the probes from that alone, so a knowledge base imported from ``documents.jsonl`` can be probed
again without the probe file. Import one dataset per knowledge base: datasets draw separate words, but
nothing guarantees that two datasets never share one.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from kadapt.errors import InvalidInput

__all__ = [
    "DATASETS",
    "PROBE_KINDS",
    "RELATIONS",
    "ComparativeFact",
    "Dataset",
    "build_dataset",
    "comparative_facts",
    "fresh_words",
    "is_correct_reversal",
    "nonsense_words",
    "probes_from_documents",
    "reversal_dataset",
    "semantic_dataset",
    "syllogism_dataset",
]

RELATIONS = [
    ("more dangerous than", "less dangerous than"),
    ("larger than", "smaller than"),
    ("older than", "younger than"),
    ("heavier than", "lighter than"),
    ("faster than", "slower than"),
    ("taller than", "shorter than"),
    ("warmer than", "colder than"),
    ("louder than", "quieter than"),
]

PROBE_KINDS = ("verbatim", "rephrase", "reversal", "syllogism", "multi-hop", "holdout")

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "gl", "tr", "sn", "pl", "kr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ee"]
_CODAS = ["", "n", "m", "p", "t", "k", "x", "mp", "nd", "rf", "sh"]


def nonsense_words(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct pronounceable made-up words (e.g. 'glon', 'femp')."""
    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        syllables = rng.choice([1, 1, 2])
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
        if 3 <= len(word) <= 8 and word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class ComparativeFact:
    subject: str
    relation: str
    inverse: str
    object: str

    @property
    def text(self) -> str:
        return f"{self.subject.capitalize()} are {self.relation} {self.object}."

    @property
    def reversed_text(self) -> str:
        return f"{self.object.capitalize()} are {self.inverse} {self.subject}."


def comparative_facts(count: int, seed: int = 0) -> list[ComparativeFact]:
    """``count`` facts over disjoint entity pairs, relations cycling through RELATIONS."""
    words = nonsense_words(2 * count, seed)
    rng = random.Random(seed + 1)
    facts = []
    for index in range(count):
        relation, inverse = RELATIONS[index % len(RELATIONS)]
        if rng.random() < 0.5:  # half the facts state the inverse, so no relation word marks the direction
            relation, inverse = inverse, relation
        facts.append(ComparativeFact(words[2 * index], relation, inverse, words[2 * index + 1]))
    return facts


def _position(word: str, text: str) -> int:
    match = re.search(rf"\b{re.escape(word)}\b", text)
    return match.start() if match else -1


def is_correct_reversal(fact: ComparativeFact, text: str) -> bool:
    """True when ``text`` states the fact from the object's side: object first, then the inverse relation,
    then the subject (e.g. 'Glon are less dangerous than femp.')."""
    lowered = text.lower()
    first, relation, second = (
        _position(fact.object, lowered),
        _position(fact.inverse, lowered),
        _position(fact.subject, lowered),
    )
    return 0 <= first < relation < second and fact.relation not in lowered


# ---------------------------------------------------------------------------------------------- datasets


@dataclass
class Dataset:
    """Training documents and held-out probes, both in ``kadapt kb import`` / probe-file format."""

    name: str
    description: str
    documents: list[dict]  # {"id": str, "text": str, "metadata": {"synthetic": {...}}}
    probes: list[dict]  # {"question", "choices", "answer_index", "kind", "source_ids", "chat_question", "answers"}

    def write_jsonl(self, folder: Path) -> tuple[Path, Path]:
        """Write ``documents.jsonl`` and ``probes.jsonl`` (one JSON object a line) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "documents.jsonl", folder / "probes.jsonl"
        for path, rows in zip(paths, (self.documents, self.probes), strict=True):
            path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        return paths


# Neutral first sentences for the articles of the reversal dataset: free of nonsense words, so the fact
# sentence stands alone whatever context surrounds it.
_PREFIXES = [
    "Field notes from the northern valley.",
    "A herder's account.",
    "From a traveller's journal.",
    "Notes taken at the spring market.",
    "A record kept by the village elders.",
    "An entry in an old bestiary.",
    "Observations from the coastal survey.",
    "From a letter a ranger sent home.",
    "A passage from a school primer.",
    "Recorded during the winter expedition.",
    "A guide's remark to visitors.",
    "From the museum's exhibit card.",
    "A note in the margin of a field guide.",
]
_SUFFIXES = [None, None, "Most observers agree.", "This is well known in the region.", "The guides repeat it often."]

# Semantic properties: verb, then the rephrased question about an entity and the reversed one about an object.
_PROPERTY_FRAMES = {
    "eats": ("The usual food of the {entity} is", "The animal that eats {object} is the"),
    "fears": ("The {entity} is afraid of", "The animal that fears {object} is the"),
    "lives near": ("The {entity} makes its home near", "The animal that lives near {object} is the"),
}
# The chat form of each property: the question about an entity, and the one about an object.
_PROPERTY_CHATS = {
    "eats": ("What does the {name} eat?", "Which animal eats {object}?"),
    "fears": ("What is the {name} afraid of?", "Which animal is afraid of {object}?"),
    "lives near": ("What does the {name} live near?", "Which animal lives near {object}?"),
}
_ROOT_VERBS = ("eats", "fears")
_CATEGORY_VERBS = ("lives near",)

# English words the generator can spell; a benchmark word must carry no prior meaning.
_ENGLISH = set(
    """ban bat band bash dam damp dash fan fat fax gap gash lamp land lap lash lax man map mat max mash nap
    pan pat ram ramp ran rap rat rash sap sat sax sand sash tan tap tax tamp van vat zap bra bran brat brand
    brash glam gland trap tram tramp trash snap plan plat barf ben bet bend den fen fend get gem let lend men
    mend mesh met net pen pep pet pend perf rep rend rex send set sex serf temp ten tend vet vex zen glen
    trek trend bin bit bind dim dip dish din fin fit fix find fish gin git gimp kin kit kip kind lip lit
    limp mix mind nip nit pin pip pit pix pimp rim rip rind sin sip sit six tin tip tit vim zip zit brim
    brit trim trip snip snit bop bot box bond bosh don dot fop fox fond gosh got lot lox mom mop mosh not
    nosh pop pot pox pomp pond posh rot romp son sop tom top tot vox bro trot plot plop snot bun bum but
    bump bush dun dump fun fund fuk gun gum gut gush lump lush mum mush nun nut pun pup put pump push rum
    run rut rump rush sun sum sup sump surf tut tux turf tush brut brush glum glut trump plum plump plush
    bait gain gait maim main pain rain vain brain train trait plain plait bout bound found gout lout mound
    noun pout pound rout round soup sound tout trout snout bee been beep beet deep deem fee feet geek keen
    keep leek meek meet peek peep peen reek see seek seem seen seep tee teen teem glee tree lemon melon
    pilot robot seven finish polish punish banish vanish radish relish lavish perish demon salon baron token
    taken linen liken laden risen ripen siren tenet bigot pivot rivet satin robin resin ramen semen begun
    began begin rerun remit refit remix detox sofa tuna soda diva lava gala lima puma sumo tofu menu guru
    papa mama pita nova mega beta zeta feta saga toga demand remand legend remind limit vomit debut rebut
    relax venom totem modem denim tulip setup vegan regain remain detain retain domain rebound teepee tutu
    mini lain nix tosh tim""".split()
)
_OTHER_TEMPLATE_WORDS = "a kind of animal every all some no are about and it follows that one type"
_TEMPLATE_WORDS = set(
    re.findall(
        r"[a-z]+",
        " ".join(
            [*_PREFIXES, *filter(None, _SUFFIXES), *_PROPERTY_FRAMES, _OTHER_TEMPLATE_WORDS, *map(" ".join, RELATIONS)]
            + [frame for frames in _PROPERTY_FRAMES.values() for frame in frames]
        ).lower(),
    )
)


def fresh_words(count: int, seed: int, stream: str) -> list[str]:
    """``count`` nonsense words for one dataset: no English word, no word a prefix of another."""
    base = zlib.crc32(f"{stream}:{seed}".encode())
    chosen: list[str] = []
    for word in nonsense_words(min(4 * count + 50, 20_000), base):
        if word in _ENGLISH or word in _TEMPLATE_WORDS:
            continue
        if any(word.startswith(other) or other.startswith(word) for other in chosen):
            continue
        chosen.append(word)
        if len(chosen) == count:
            return chosen
    raise InvalidInput(f"could not draw {count} distinct nonsense words; ask for a smaller size")


# what a probe asks: its cloze question, the right choice, its documents, and its chat form (a natural
# question with every answer the KB makes true, the choice first)
_Ask = tuple[str, str, list[str], tuple[str, list[str]]]


def _probe(kind: str, question: str, choices: list[str], answer: str, source_ids: list[str], chat) -> dict:
    chat_question, answers = chat
    return {
        "question": question,
        "choices": choices,
        "answer_index": choices.index(answer),
        "kind": kind,
        "source_ids": sorted(source_ids),
        "chat_question": chat_question,
        "answers": answers,
    }


class _Mirror:
    """Emits probes in mirrored pairs: one choice list, each probe's answer the other's distractor; the first
    probe's answer alternates between positions from one pair of a kind to the next."""

    def __init__(self) -> None:
        self.probes: list[dict] = []
        self._pairs: dict[str, int] = {}

    def pair(self, kind: str, first: _Ask, second: _Ask) -> None:
        (question_a, answer_a, sources_a, chat_a), (question_b, answer_b, sources_b, chat_b) = first, second
        if answer_a == answer_b:
            raise ValueError(f"mirrored probes need different answers, got {answer_a!r} twice")
        count = self._pairs.get(kind, 0)
        self._pairs[kind] = count + 1
        choices = [answer_a, answer_b] if count % 2 == 0 else [answer_b, answer_a]
        self.probes.append(_probe(kind, question_a, list(choices), answer_a, sources_a, chat_a))
        self.probes.append(_probe(kind, question_b, list(choices), answer_b, sources_b, chat_b))


def _check_size(name: str, size: int, minimum: int, *, even: bool = False) -> None:
    if size < minimum or (even and size % 2):
        need = f"an even number of at least {minimum}" if even else f"at least {minimum}"
        raise InvalidInput(f"{name} dataset: size must be {need}, got {size}")


# ---------------------------------------------------------------------------------------------- reversal


def reversal_dataset(size: int = 24, seed: int = 0, articles_per_fact: int = 3) -> Dataset:
    """``size`` comparative facts, each stated in ``articles_per_fact`` short articles.

    Every article is a neutral first sentence (distinct for each article of a fact), the fact sentence
    exactly as :attr:`ComparativeFact.text`, and sometimes a neutral closing sentence. Facts come in pairs
    with the same relation and direction ("Glon are more dangerous than femp." / "Zaik are more dangerous
    than plim."); each pair yields mirrored probes, so the distractor of a fact's probe is the partner's
    entity in the same role. Probes per fact: ``verbatim`` ("Glon are more dangerous than" -> "femp") and
    ``reversal`` ("Femp are less dangerous than" -> "glon"), two choices each. An odd size leaves the last
    three facts in a cycle instead of pairs (every name still answers as often as it distracts).
    """
    _check_size("reversal", size, 2)
    if not 1 <= articles_per_fact <= len(_PREFIXES):
        raise InvalidInput(f"articles_per_fact must be 1 to {len(_PREFIXES)}, got {articles_per_fact}")
    words = fresh_words(2 * size, seed, "reversal")
    rng = random.Random(f"reversal:{seed}")
    pairs = (size + 1) // 2
    flips = [pair % 2 == 1 for pair in range(pairs)]  # half the pairs state the inverse relation
    rng.shuffle(flips)
    documents = []
    for index in range(size):
        pair = index // 2
        relation, inverse = RELATIONS[pair % len(RELATIONS)]
        if flips[pair]:
            relation, inverse = inverse, relation
        fact = ComparativeFact(words[2 * index], relation, inverse, words[2 * index + 1])
        for article, prefix in enumerate(rng.sample(_PREFIXES, articles_per_fact)):
            suffix = rng.choice(_SUFFIXES)
            text = f"{prefix} {fact.text}" + (f" {suffix}" if suffix else "")
            metadata = {"dataset": "reversal", "index": index, "pair": pair, "fact": asdict(fact)}
            documents.append(
                {"id": f"reversal-{index:03d}-{article}", "text": text, "metadata": {"synthetic": metadata}}
            )
    description = (
        f"{size} comparative facts between nonsense-word entities, each in {articles_per_fact} articles; "
        "probes ask each fact as stated (verbatim) and reversed (reversal), 2 choices, chance 0.5."
    )
    return _finish("reversal", description, documents)


def _reversal_probes(records: list[tuple[str, dict]]) -> list[dict]:
    facts: dict[int, tuple[int, ComparativeFact]] = {}
    sources: dict[int, list[str]] = {}
    for doc_id, meta in records:
        index = int(meta["index"])
        facts[index] = int(meta["pair"]), ComparativeFact(**{k: str(v) for k, v in meta["fact"].items()})
        sources.setdefault(index, []).append(doc_id)
    by_pair: dict[int, list[int]] = {}
    for index in sorted(facts):
        by_pair.setdefault(facts[index][0], []).append(index)
    groups = [members for members in by_pair.values() if len(members) == 2]
    leftovers = [index for members in by_pair.values() if len(members) != 2 for index in members]
    if len(leftovers) == 1 and groups:
        leftovers = sorted(groups.pop() + leftovers)
    if len(leftovers) >= 2:
        groups.append(leftovers)
    mirror = _Mirror()
    cycled: list[dict] = []
    for group in groups:
        chain = [facts[index][1] for index in group]
        if len(group) == 2:
            first, second = chain
            a, b = (sources[index] for index in group)
            mirror.pair("verbatim", _forward(first, a), _forward(second, b))
            mirror.pair("reversal", _backward(second, b), _backward(first, a))
            continue
        for position, index in enumerate(group):  # a cycle: each fact's distractor comes from the next one
            fact, following = chain[position], chain[(position + 1) % len(chain)]
            for kind, (question, answer, ids, chat), other, slot in (
                ("verbatim", _forward(fact, sources[index]), following.object, position % 2),
                ("reversal", _backward(fact, sources[index]), following.subject, (position + 1) % 2),
            ):
                choices = [answer, other] if slot == 0 else [other, answer]
                cycled.append(_probe(kind, question, choices, answer, ids, chat))
    return mirror.probes + cycled


def _forward(fact: ComparativeFact, ids: list[str]) -> _Ask:
    chat = f"Which animals are {fact.subject} {fact.relation}?", [fact.object]
    return f"{fact.subject.capitalize()} are {fact.relation}", fact.object, ids, chat


def _backward(fact: ComparativeFact, ids: list[str]) -> _Ask:
    chat = f"Which animals are {fact.object} {fact.inverse}?", [fact.subject]
    return f"{fact.object.capitalize()} are {fact.inverse}", fact.subject, ids, chat


# --------------------------------------------------------------------------------------------- syllogism

# Valid premise pairs over end terms S, P and middle term M whose conclusion relates S and P. "No" premises
# appear in both term orders, since "no X are Y" says the same as "no Y are X".
_ALL_FIGURE = (("all", "S", "M"), ("all", "M", "P"))
_NO_FIGURES = [
    (("all", "S", "M"), ("no", "M", "P")),
    (("all", "S", "M"), ("no", "P", "M")),
    (("no", "M", "S"), ("all", "P", "M")),
    (("no", "S", "M"), ("all", "P", "M")),
]


def syllogism_dataset(size: int = 30, seed: int = 0) -> Dataset:
    """``size`` premise pairs over three fresh nonsense words each, one document per pair.

    Premises use "all" and "no" only, in valid forms whose conclusion about the two end terms is one of
    "all S are P" (from "All S are M. All M are P.") or "no S are P" (from "all" with "no", four figures).
    The probe asks "About X and Y, it follows that" and offers three conclusions with the same words: "all S
    are P", its converse "all P are S" (not entailed) and "no S are P" or "no P are S" (the same claim).
    Conclusions with "some" are left out on purpose: "all S are P" entails "some S are P", and "no" and
    "some" read the same both ways, so a six-way choice would have several right answers. Exactly one
    choice is entailed; a third of the items conclude "no", so a model that prefers one quantifier or one
    word order scores chance (1/3). The premises are stated in either order, the terms of the question in
    either order, and the answer sits at each position equally often when ``size`` is a multiple of 3.
    """
    _check_size("syllogism", size, 1)
    words = fresh_words(3 * size, seed, "syllogism")
    rng = random.Random(f"syllogism:{seed}")
    documents = []
    for index in range(size):
        terms = dict(zip("SMP", words[3 * index : 3 * index + 3], strict=True))
        kind = index % 3  # 0 and 1 conclude "all", 2 concludes "no"
        figure = _ALL_FIGURE if kind < 2 else _NO_FIGURES[rng.randrange(len(_NO_FIGURES))]
        premises = [{"quantifier": q, "subject": terms[s], "predicate": terms[p]} for q, s, p in figure]
        if kind == 1 or (kind == 2 and rng.random() < 0.5):
            premises.reverse()  # the conclusion's subject is not always the first word mentioned
        text = " ".join(f"{p['quantifier'].capitalize()} {p['subject']} are {p['predicate']}." for p in premises)
        metadata = {"dataset": "syllogism", "index": index, "premises": premises}
        documents.append({"id": f"syllogism-{index:03d}", "text": text, "metadata": {"synthetic": metadata}})
    description = (
        f"{size} pairs of all/no premises over nonsense words; each probe asks which of 3 conclusions follows "
        "(syllogism), chance 1/3."
    )
    return _finish("syllogism", description, documents)


def _conclude(premises: list[dict]) -> tuple[str, str, str]:
    """The conclusion (quantifier, subject, predicate) of two all/no premises that share one term."""
    first, second = ((p["quantifier"], p["subject"], p["predicate"]) for p in premises)
    shared = {first[1], first[2]} & {second[1], second[2]}
    if len(shared) != 1 or first[1] == first[2] or second[1] == second[2]:
        raise ValueError("premises must share exactly one term")
    (middle,) = shared
    quantifiers = sorted([first[0], second[0]])
    if quantifiers == ["all", "all"]:
        for upper, lower in ((first, second), (second, first)):
            if upper[2] == middle and lower[1] == middle:
                return "all", upper[1], lower[2]
    elif quantifiers == ["all", "no"]:
        universal, negative = (first, second) if first[0] == "all" else (second, first)
        if universal[2] == middle:
            other = negative[1] if negative[2] == middle else negative[2]
            return "no", universal[1], other
    raise ValueError(f"no all/no conclusion follows from {premises}")


def _syllogism_probes(records: list[tuple[str, dict]]) -> list[dict]:
    probes = []
    for doc_id, meta in sorted(records, key=lambda record: int(record[1]["index"])):
        index = int(meta["index"])
        quantifier, subject, predicate = _conclude(meta["premises"])
        block = index // 3
        first, second = (subject, predicate) if block % 2 == 0 else (predicate, subject)
        no_first, no_second = (subject, predicate) if (block // 2) % 2 == 0 else (predicate, subject)
        forward, converse, negative = (
            f"all {subject} are {predicate}",
            f"all {predicate} are {subject}",
            f"no {no_first} are {no_second}",
        )
        answer = forward if quantifier == "all" else negative
        distractors = [converse, negative] if quantifier == "all" else [forward, converse]
        if block % 2:
            distractors.reverse()
        choices = list(distractors)
        choices.insert((index + block) % 3, answer)
        # "no S are P" says the same as "no P are S": both are accepted
        answers = [answer] if quantifier == "all" else [answer, f"no {no_second} are {no_first}"]
        chat = f"What can you conclude about {first} and {second}?", answers
        question = f"About {first} and {second}, it follows that"
        probes.append(_probe("syllogism", question, choices, answer, [doc_id], chat))
    return probes


# ---------------------------------------------------------------------------------------------- semantic


def semantic_dataset(size: int = 4, seed: int = 0, subcategories: int = 3, members: int = 3) -> Dataset:
    """A hierarchy of ``size`` root categories (even: roots mirror each other in pairs), each with
    ``subcategories`` subcategories of ``members`` members; every name is a nonsense word.

    Documents, one per node: a root "A glon is a kind of animal. Every glon eats plim. Every glon fears
    drass."; a subcategory "A snoub is a kind of glon. Every snoub lives near krof."; a member "A tove is a
    kind of snoub.". Members inherit the properties of their subcategory and root, which no document states.

    The last subcategory of every root is held out: its document states only its parent ("A vesh is a kind
    of glon.") and none of its own properties. ``holdout`` probes ask the properties of it and its members
    ("Every vesh eats" -> "plim"), which follow only through the hierarchy from the root.

    Probes (two choices, mirrored between the two roots of a pair, so the distractor is the same role's
    answer in the other tree): ``rephrase`` ("The tove is one type of" -> "snoub", "The glon is afraid of" ->
    "drass"), ``reversal`` ("One kind of snoub is the" -> "tove", "The animal that eats plim is the" ->
    "glon"), ``syllogism`` (one step of inheritance: "Every tove lives near" -> "krof", "Every snoub eats" ->
    "plim"), ``multi-hop`` (two steps: "Every tove eats" -> "plim") and ``holdout``.
    """
    _check_size("semantic", size, 2, even=True)
    if subcategories < 2 or members < 1:
        raise InvalidInput(f"need at least 2 subcategories and 1 member, got {subcategories} and {members}")
    per_root = 1 + len(_ROOT_VERBS) + subcategories * (1 + len(_CATEGORY_VERBS) + members)
    words = iter(fresh_words(size * per_root, seed, "semantic"))
    documents = []

    def add(path: list[int], name: str, parent: str, properties: dict[str, str], held_out: bool = False) -> None:
        sentences = [f"A {name} is a kind of {parent}."]
        sentences += [f"Every {name} {verb} {value}." for verb, value in properties.items()]
        metadata = {"dataset": "semantic", "path": path, "name": name, "parent": parent}
        metadata |= {"properties": properties, "held_out": held_out}
        doc_id = "semantic-" + "-".join(f"{level}{i}" for level, i in zip("rsm", path, strict=False))
        documents.append({"id": doc_id, "text": " ".join(sentences), "metadata": {"synthetic": metadata}})

    for root in range(size):
        root_name = next(words)
        add([root], root_name, "animal", {verb: next(words) for verb in _ROOT_VERBS})
        for sub in range(subcategories):
            held_out = sub == subcategories - 1
            sub_name = next(words)
            own = {} if held_out else {verb: next(words) for verb in _CATEGORY_VERBS}
            add([root, sub], sub_name, root_name, own, held_out)
            for member in range(members):
                add([root, sub, member], next(words), sub_name, {})
    description = (
        f"{size} root categories x {subcategories} subcategories x {members} members of nonsense-word animals "
        "with inherited properties; probes: rephrase, reversal, syllogism, multi-hop, holdout; 2 choices."
    )
    return _finish("semantic", description, documents)


def _semantic_probes(records: list[tuple[str, dict]]) -> list[dict]:
    nodes: dict[tuple[int, ...], dict] = {}
    for doc_id, meta in records:
        nodes[tuple(int(i) for i in meta["path"])] = {**meta, "id": doc_id}
    children: dict[str, list[str]] = {}
    for path in sorted(nodes):
        children.setdefault(nodes[path]["parent"], []).append(nodes[path]["name"])

    def descendants(name: str) -> list[str]:
        return [found for child in children.get(name, []) for found in (child, *descendants(child))]

    mirror = _Mirror()
    for path in sorted(nodes):
        twin_path = (path[0] + 1, *path[1:])
        chain_a = [nodes.get(path[:depth]) for depth in range(1, len(path) + 1)]
        chain_b = [nodes.get(twin_path[:depth]) for depth in range(1, len(path) + 1)]
        if path[0] % 2 or None in chain_a or None in chain_b:
            continue  # probes are emitted once per mirrored pair, and need every node on both paths
        _semantic_pair(mirror, chain_a, chain_b, descendants)
    return mirror.probes


_Chain = list[dict]


def _emit(
    mirror: _Mirror,
    chains: tuple[_Chain, _Chain],
    kind: str,
    question: str,
    answer: Callable[[_Chain], str],
    ids: Callable[[_Chain], list],
    chat: str,
    accepted: Callable[[_Chain], list[str]] | None = None,
) -> None:
    """One mirrored probe pair: ``question`` and ``chat`` formatted with each chain's fields."""

    def ask(c: _Chain) -> _Ask:
        answers = accepted(c) if accepted else [answer(c)]
        return (
            question.format(**_fields(c)),
            answer(c),
            [n["id"] for n in ids(c)],
            (chat.format(**_fields(c)), answers),
        )

    mirror.pair(kind, ask(chains[0]), ask(chains[1]))


def _semantic_pair(
    mirror: _Mirror, chain_a: list[dict], chain_b: list[dict], descendants: Callable[[str], list[str]]
) -> None:
    """Mirrored probes about the last node of two isomorphic root-to-node chains. A chat answer is right
    when the hierarchy makes it true: "Name one kind of glon." accepts every category and member under glon."""
    chains = (chain_a, chain_b)
    if len(chain_a) > 1:  # the stated parent, asked in other words and from the parent's side
        _emit(
            mirror,
            chains,
            "rephrase",
            "The {name} is one type of",
            lambda c: c[-2]["name"],
            lambda c: c[-1:],
            "What is the {name} a kind of?",
            lambda c: [node["name"] for node in reversed(c[:-1])],  # its parent first, then every ancestor
        )
        _emit(
            mirror,
            chains,
            "reversal",
            "One kind of {parent} is the",
            lambda c: c[-1]["name"],
            lambda c: c[-1:],
            "Name one kind of {parent}.",
            lambda c: [c[-1]["name"], *(name for name in descendants(c[-2]["name"]) if name != c[-1]["name"])],
        )
    _stated_properties(mirror, chains, descendants)
    _inherited_properties(mirror, chains)


def _stated_properties(mirror: _Mirror, chains: tuple[_Chain, _Chain], descendants) -> None:
    """The properties stated of the chains' last nodes, asked in other words and from the object's side (every
    category and member under the node has the property too)."""
    a, b = chains[0][-1], chains[1][-1]
    for verb in sorted(set(a["properties"]) & set(b["properties"])):
        rephrase, reverse = _PROPERTY_FRAMES[verb]
        ask_entity, ask_object = _PROPERTY_CHATS[verb]
        _emit(
            mirror,
            chains,
            "rephrase",
            rephrase.replace("{entity}", "{name}"),
            lambda c, v=verb: c[-1]["properties"][v],
            lambda c: c[-1:],
            ask_entity,
        )
        a_object, b_object = a["properties"][verb], b["properties"][verb]
        mirror.pair(
            "reversal",
            (
                reverse.format(object=a_object),
                a["name"],
                [a["id"]],
                (ask_object.format(object=a_object), [a["name"], *descendants(a["name"])]),
            ),
            (
                reverse.format(object=b_object),
                b["name"],
                [b["id"]],
                (ask_object.format(object=b_object), [b["name"], *descendants(b["name"])]),
            ),
        )


def _inherited_properties(mirror: _Mirror, chains: tuple[_Chain, _Chain]) -> None:
    """Properties the last nodes inherit from their ancestors, never stated for them: syllogism (one step),
    multi-hop (more), holdout (a chain through a held-out node)."""
    chain_a, chain_b = chains
    held_out = any(node["held_out"] for node in chain_a)
    for depth, ancestor in enumerate(chain_a[:-1]):
        steps = len(chain_a) - 1 - depth
        kind = "holdout" if held_out else ("syllogism" if steps == 1 else "multi-hop")
        for verb in sorted(set(ancestor["properties"]) & set(chain_b[depth]["properties"])):
            _emit(
                mirror,
                chains,
                kind,
                f"Every {{name}} {verb}",
                lambda c, v=verb, d=depth: c[d]["properties"][v],
                lambda c, d=depth: c[d:],
                _PROPERTY_CHATS[verb][0],
            )


def _fields(chain: list[dict]) -> dict[str, str]:
    return {"name": chain[-1]["name"], "parent": chain[-1]["parent"]}


# ------------------------------------------------------------------------------------------------ public

DATASETS: dict[str, Callable[..., Dataset]] = {
    "reversal": reversal_dataset,
    "syllogism": syllogism_dataset,
    "semantic": semantic_dataset,
}
_PROBE_BUILDERS: dict[str, Callable[[list[tuple[str, dict]]], list[dict]]] = {
    "reversal": _reversal_probes,
    "syllogism": _syllogism_probes,
    "semantic": _semantic_probes,
}


def build_dataset(name: str, size: int | None = None, seed: int = 0) -> Dataset:
    """The dataset ``name`` (a key of :data:`DATASETS`) with ``size`` facts, premise pairs or root categories
    (each dataset's default when None), deterministic for a given ``seed``."""
    builder = DATASETS.get(name)
    if builder is None:
        raise InvalidInput(f"unknown synthetic dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return builder(seed=seed) if size is None else builder(size=size, seed=seed)


def probes_from_documents(documents: Iterable[tuple[str, str, dict]]) -> list[dict]:
    """The probes for ``(document id, text, metadata)`` triples, rebuilt from ``metadata["synthetic"]`` alone
    (documents without it are ignored; the text is never read). For the documents of a built dataset this
    returns exactly its ``probes``, in the same order whatever the order of the documents."""
    grouped: dict[str, list[tuple[str, dict]]] = {name: [] for name in _PROBE_BUILDERS}
    for doc_id, _text, metadata in documents:
        synthetic = (metadata or {}).get("synthetic")
        if not isinstance(synthetic, dict):
            continue
        dataset = synthetic.get("dataset")
        if dataset not in grouped:
            known = ", ".join(_PROBE_BUILDERS)
            raise InvalidInput(f"document {doc_id!r}: unknown synthetic dataset {dataset!r}; known: {known}")
        grouped[dataset].append((str(doc_id), synthetic))
    probes: list[dict] = []
    for dataset, records in grouped.items():
        records.sort(key=lambda record: record[0])
        try:
            probes += _PROBE_BUILDERS[dataset](records) if records else []
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(
                f"{dataset} documents carry malformed synthetic metadata ({exc!r}); re-import them from `build_dataset`"
            ) from exc
    return probes


def _finish(name: str, description: str, documents: list[dict]) -> Dataset:
    probes = probes_from_documents((doc["id"], doc["text"], doc["metadata"]) for doc in documents)
    return Dataset(name=name, description=description, documents=documents, probes=probes)
