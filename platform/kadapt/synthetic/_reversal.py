"""The ``reversal`` dataset: comparative facts in short articles, asked as stated and from the other side."""

from __future__ import annotations

import random
from dataclasses import asdict

from kadapt.errors import InvalidInput
from kadapt.synthetic._common import Dataset, _Ask, _check_size, _finish, _Mirror, _probe
from kadapt.synthetic._templates import _PREFIXES, _SUFFIXES, RELATIONS
from kadapt.synthetic._words import ComparativeFact, fresh_words


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
    return _finish("reversal", description, documents, _reversal_probes)


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
