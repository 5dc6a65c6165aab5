"""Built-in augmenters: ``sentence-split`` (rules), ``reverse`` (entity-preserving word-order reversal, rules),
``local`` (rephrasings and reversals written by the model), ``global`` (inferences linking a document to
the rest of the KB, written by the model) and ``chain`` (the same inferences derived by rules)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from kadapt.contracts import (
    AugmentContext,
    Draft,
    SourceDocument,
    conclusions,
    first_line,
    follows,
    hookimpl,
    is_copy,
    keeps_terms,
    key_terms,
    negated,
    parse_statement,
    reverse_sentence,
    same_claim,
    sentences,
    starts_like,
)
from kadapt.models.base import GenerationParams

__all__ = [
    "ChainInference",
    "GlobalInference",
    "LocalRewrite",
    "ReverseTraining",
    "SentenceSplit",
    "composition_problems",
    "fields_text",
    "keeps_claim",
    "parse_reversal",
]


class SentenceSplit:
    """Each sentence alone (independent) and each prefix of the document up to a sentence (cumulative)."""

    name = "sentence-split"
    scope = "local"
    description = "Documents split into sentence-level training examples, independent and cumulative."
    batch_documents = 32

    def dependency(self, document: SourceDocument, context: AugmentContext) -> str:
        return document.content_hash

    def augment(self, documents: Sequence[SourceDocument], context: AugmentContext) -> Iterator[Draft]:
        for document in documents:
            found = sentences(document.text)
            for sentence in found:
                yield Draft(sentence, "sentence", (document.id,))
            for end in range(2, len(found)):
                yield Draft(" ".join(found[:end]), "cumulative", (document.id,))


class ReverseTraining:
    """Each sentence with its word order reversed and its entities kept whole (Golovneva et al. 2024, "Reverse
    Training to Nurse the Reversal Curse"): trained beside the documents, every fact is also seen with its
    last entity first. No model; see ``_reverse`` for how entities are found."""

    name = "reverse"
    scope = "local"
    description = "Sentences with their word order reversed, names and terms kept whole (reverse training)."
    batch_documents = 64

    def dependency(self, document: SourceDocument, context: AugmentContext) -> str:
        return document.content_hash

    def augment(self, documents: Sequence[SourceDocument], context: AugmentContext) -> Iterator[Draft]:
        for document in documents:
            for sentence in sentences(document.text):
                reversal = reverse_sentence(sentence)
                if len(reversal.units) > 1:  # one unit reversed is the sentence itself
                    yield Draft(reversal.text, "reversed", (document.id,))


# A small model cannot reliably rewrite a sentence backwards in one go, but it can fill in fields from a
# few examples; the reversed sentence is then composed from the fields by a template.
REVERSAL_SYSTEM = (
    "Split the statement into its first part, the link, and its second part, then give the link that states "
    "the same fact from the second part's side (for example 'are larger than' becomes 'are smaller than')."
)
REVERSAL_EXAMPLES = [
    ("Mira Patel manages the Lisbon office.", ("Mira Patel", "manages", "the Lisbon office", "is managed by")),
    ("Whales are larger than dolphins.", ("Whales", "are larger than", "dolphins", "are smaller than")),
    ("Trains are slower than planes.", ("Trains", "are slower than", "planes", "are faster than")),
    ("Glips are more dangerous than travs.", ("Glips", "are more dangerous than", "travs", "are less dangerous than")),
    ("Zorbs are colder than mests.", ("Zorbs", "are colder than", "mests", "are warmer than")),
    ("The printer NW-PRINT-01 is on the third floor.", ("The printer NW-PRINT-01", "is on", "the third floor", "has")),
    ("Bloks are lighter than frens.", ("Bloks", "are lighter than", "frens", "are heavier than")),
]
_FIELDS = ("First", "Link", "Second", "Reversed link")


def fields_text(fields: tuple[str, ...]) -> str:
    return "\n".join(f"{name}: {value}" for name, value in zip(_FIELDS, fields, strict=True))


def parse_reversal(text: str, source: str, context: str = "") -> str:
    """Compose '<second> <reversed link> <first>.' from the fields the model filled.

    '' when a field is missing or the composition is malformed (:func:`composition_problems`): the parts
    not quoted from ``source`` (the model invented or misspelt an entity), an unchanged link (for an
    asymmetric relation, a wrong reversal), an entity repeated in the link, unbalanced quotes, two clauses.
    ``context`` (the source's document) tells a sentence-initial capital from a name's."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in _FIELDS and value.strip():
            values.setdefault(name.strip(), value.strip().rstrip("."))
    if not all(values.get(name) for name in _FIELDS):
        return ""
    first, link, second, reversed_link = (values[name] for name in _FIELDS)
    composed_first = first
    if first.split()[0].lower() in ("the", "a", "an") or _sentence_case_only(first, source, context):
        composed_first = first[0].lower() + first[1:]
    composed = f"{second[:1].upper()}{second[1:]} {reversed_link} {composed_first}."
    return "" if composition_problems(source, (first, link, second, reversed_link), composed) else composed


_CLAUSE_OPENERS = frozenset("who whom whose which that and but or because while where when whereas".split())
_SINGLE_QUOTE = re.compile(r"(?<![A-Za-z0-9])'|'(?![A-Za-z0-9])")


def composition_problems(source: str, fields: tuple[str, str, str, str], composed: str) -> list[str]:
    """Why a reversal composed from ``fields`` (first part, link, second part, reversed link of ``source``)
    is malformed; [] when it is well formed.

    The fields must split the source in order (so the parts are its edges, not a name picked from its
    middle, and nothing the sentence says is lost); the reversed link must change the link and repeat
    neither part (which is how 'Nebula Cocktail is the master mixologist who crafted the legendary "Nebula
    Cocktail" Liam Blackstone.' came about); the composition must be one clause with balanced quotes."""
    first, link, second, reversed_link = fields
    problems = []
    if _plain(f"{first} {link} {second}") != _plain(source):
        problems.append("the first part, link and second part do not make up the sentence in order")
    if _plain(link) == _plain(reversed_link):
        problems.append("the reversed link is the link unchanged")
    link_terms = set(key_terms(reversed_link))
    for part in (first, second):
        if link_terms & set(key_terms(part)):
            problems.append(f"the reversed link repeats {part!r}")
    if re.search(r"[.;:!?](\s|$)", composed[:-1]) or "\n" in composed:
        problems.append("the composition is more than one sentence")
    last_word = reversed_link.split()[-1].lower() if reversed_link.split() else ""
    if last_word in _CLAUSE_OPENERS:
        problems.append(f"the reversed link ends in {last_word!r}: the first part would open a second clause")
    if (
        composed.count('"') % 2
        or composed.count("“") != composed.count("”")
        or len(_SINGLE_QUOTE.findall(composed)) % 2
    ):
        problems.append("the composition has unbalanced quotes")
    return problems


def _plain(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _sentence_case_only(word: str, source: str, context: str) -> bool:
    """Whether ``word`` is capitalized in ``source`` only because it opens the sentence: a single word that
    never appears capitalized mid-sentence in ``context`` (the document), e.g. 'Whales' or a made-up
    'Brarf', but not a name such as 'Alice' that the document also capitalizes elsewhere."""
    if " " in word or not word[:1].isupper() or word.isupper() or not source.startswith(word):
        return False
    for match in re.finditer(rf"\b{re.escape(word)}\b", context or source):
        before = (context or source)[: match.start()].rstrip()
        if before and before[-1] not in ".!?:\n\"'":
            return False
    return True


REPHRASE_SYSTEM = "You rewrite a statement in different words. Keep every name, number and fact."
REPHRASE_EXAMPLES = [
    ("Mira Patel manages the Lisbon office.", "Mira Patel is the manager of the Lisbon office."),
    ("Whales are larger than dolphins.", "Whales have a bigger size than dolphins."),
    ("Claims above EUR 250 need approval from Finance.", "Finance has to approve any claim over EUR 250."),
    ("Glips are more dangerous than travs.", "Glips pose a greater danger than travs do."),
]


def _few_shot(system: str, examples: list[tuple[str, str]], statement: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}]
    for source, target in examples:
        messages += [{"role": "user", "content": f"Statement: {source}"}, {"role": "assistant", "content": target}]
    return messages + [{"role": "user", "content": f"Statement: {statement}"}]


def reversal_prompt(statement: str) -> list[dict[str, str]]:
    examples = [(source, fields_text(fields)) for source, fields in REVERSAL_EXAMPLES]
    return _few_shot(REVERSAL_SYSTEM, examples, statement)


def keeps_claim(source: str, output: str) -> bool:
    """Whether a rewrite can still say what ``source`` says: it is negated as the sentence is
    (:func:`kadapt.text.negated`: "All glon are not femp." does not rephrase "All glon are femp."; "None of
    the glon are femp." does rephrase "No glon are femp."), and, when both are category statements ("all",
    "no", "a kind of"), it neither swaps the quantifier nor states the converse ("All femp are glon." of "All
    glon are femp." does not follow; "No femp are glon." of "No glon are femp." does). A rephrased verb
    ("Every snoub resides near krof.") is not judged."""
    if negated(source) != negated(output):
        return False
    stated, written = parse_statement(source), parse_statement(output)
    if stated is None or written is None or stated.verb or written.verb:
        return True
    terms = {term.casefold() for term in (stated.subject, stated.predicate)}
    return same_claim(stated, written) or terms != {term.casefold() for term in (written.subject, written.predicate)}


class LocalRewrite:
    """Per sentence, the model writes rephrasings and reversals from few-shot examples; filters keep only
    outputs that mention the sentence's entities, do not merely copy it, (reversals) do move them, and keep
    its claim (:func:`keeps_claim`: no negation added or dropped, no converse of a categorical statement)."""

    name = "local"
    scope = "local"
    description = "Rephrasings and reversals of single sentences, written by the generator model."
    # every document's sentences in one batch fill the generation batches better: the demo KB's 36 documents
    # 121 s at 8 a batch, 88 s at 36, the same yield (2 cores, fp32)
    batch_documents = 64
    samples = 2  # sampled candidates per sentence and task, besides the greedy one

    def dependency(self, document: SourceDocument, context: AugmentContext) -> str:
        return document.content_hash

    def accept(self, kind: str, source: str, output: str) -> bool:
        # a reversal may swap one comparative for its opposite ("larger" -> "smaller"): a lower share suffices
        share = 0.6 if kind == "reversal" else 0.7
        if not output or is_copy(source, output) or not keeps_terms(source, output, share):
            return False
        words, source_words = len(output.split()), len(source.split())
        if not source_words / 2 <= words <= source_words * 2.5 + 4:
            return False
        if kind == "reversal" and starts_like(source, output):
            return False
        return keeps_claim(source, output)

    def augment(self, documents: Sequence[SourceDocument], context: AugmentContext) -> Iterator[Draft]:
        tasks = [
            (document.id, sentence, kind)
            for kind in ("reversal", "rephrase")  # same-task prompts side by side share their few-shot prefix
            for document in documents
            for sentence in sentences(document.text, max_words=50)
        ]
        if not tasks:
            return
        # a sentence that recurs (a boilerplate line, a fact told in several documents) is rewritten once per
        # run of the augmenter; later documents reuse the outputs, which storage then drops as duplicates
        cache: dict[tuple[str, str], list[tuple[str, int, int]]] = context.stats.setdefault("local-rewrites", {})
        fresh = list(dict.fromkeys((kind, sentence) for _, sentence, kind in tasks if (kind, sentence) not in cache))
        texts = {document.id: document.text for document in documents}
        home = {sentence: texts[document_id] for document_id, sentence, _ in reversed(tasks)}
        if fresh:
            conversations = [
                reversal_prompt(sentence)
                if kind == "reversal"
                else _few_shot(REPHRASE_SYSTEM, REPHRASE_EXAMPLES, sentence)
                for kind, sentence in fresh
            ]
            model = context.model
            runs = [model.generate_batch(conversations, GenerationParams(max_tokens=48))]
            for seed in range(self.samples):
                runs.append(
                    model.generate_batch(conversations, GenerationParams(max_tokens=48, temperature=0.7, seed=seed))
                )
            for index, (kind, sentence) in enumerate(fresh):
                outputs, kept = [], set()
                for run in runs:
                    completion = run[index]
                    output = (
                        parse_reversal(completion.text, sentence, home[sentence])
                        if kind == "reversal"
                        else first_line(completion.text)
                    )
                    accepted = self.accept(kind, sentence, output) and output.lower() not in kept
                    if accepted:
                        kept.add(output.lower())
                    outputs.append((output if accepted else "", completion.prompt_tokens, completion.completion_tokens))
                cache[(kind, sentence)] = outputs
        unpaid = set(fresh)
        for document_id, sentence, kind in tasks:
            first_use = (kind, sentence) in unpaid
            unpaid.discard((kind, sentence))
            for text, prompt_tokens, generated_tokens in cache[(kind, sentence)]:
                # tokens spent count whether or not the output survives the filters, once per sentence
                yield Draft(
                    text,
                    kind,
                    (document_id,),
                    prompt_tokens if first_use else 0,
                    generated_tokens if first_use else 0,
                )


# A small model does not find, in a whole KB, which statements chain; given two premises that share a middle
# term (found by parsing), it can write the conclusion from a few worked examples. Every candidate is then
# checked: it must be a statement that chaining the premises licenses, so a copied premise, a converse or a
# wrong quantifier is dropped.
CONCLUSION_SYSTEM = "Write the conclusion that follows from the two premises, about the two terms they do not share."
CONCLUSION_EXAMPLES = [
    ("All dogs are mammals. All mammals are animals.", "All dogs are animals."),
    ("All sparrows are birds. No birds are fish.", "No sparrows are fish."),
    ("No reptiles are birds. All snakes are reptiles.", "No snakes are birds."),
    ("A poodle is a kind of dog. Every dog chases cats.", "Every poodle chases cats."),
    ("All lions are cats. No dogs are cats.", "No lions are dogs."),
    ("A robin is a kind of bird. A bird is a kind of animal.", "A robin is a kind of animal."),
    ("All cats are felines. All lions are cats.", "All lions are felines."),
]


def conclusion_prompt(premises: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": CONCLUSION_SYSTEM}]
    for source, target in CONCLUSION_EXAMPLES:
        messages += [
            {"role": "user", "content": f"Premises: {source}"},
            {"role": "assistant", "content": f"Conclusion: {target}"},
        ]
    return messages + [{"role": "user", "content": f"Premises: {premises}"}]


def parse_conclusion(text: str) -> str:
    line = first_line(text).strip()
    line = line.split(":", 1)[1].strip() if line.lower().startswith("conclusion:") else line
    return line if line.endswith(".") else f"{line}." if line else ""


class GlobalInference:
    """Inferences that link a document to the rest of the KB (the paper's global augmentation): its
    statements are chained with those of the documents sharing a term with it ("All glon are femp." here,
    "All femp are zaik." there), the model writes each pair's conclusion, and a conclusion is kept only when
    chaining the two premises licenses it (:func:`kadapt.statements.follows`). Each output names
    the document and the documents its premises came from. Text with no categorical statements ("All X are
    Y", "No X are Y", "A X is a kind of Y", "Every X <verb> Z") gets none."""

    name = "global"
    scope = "global"
    description = "Conclusions chaining a document's statements with related documents', written by the model, checked."
    batch_documents = 16
    samples = 2  # sampled candidates per premise pair, besides the greedy one
    rounds = 2  # a conclusion may chain again: "a tove is a kind of glon" + "every glon eats plim"

    def dependency(self, document: SourceDocument, context: AugmentContext) -> str:
        return context.kb_hash()

    def augment(self, documents: Sequence[SourceDocument], context: AugmentContext) -> Iterator[Draft]:
        tasks = _conclusion_tasks(documents, context, self.rounds, self.name)
        yield from _without_conclusions(documents, tasks)
        if not tasks:
            return
        conversations = [conclusion_prompt(f"{first.text} {second.text}") for _, _, (first, second), _ in tasks]
        runs = [context.model.generate_batch(conversations, GenerationParams(max_tokens=24))]
        for seed in range(self.samples):
            params = GenerationParams(max_tokens=24, temperature=0.7, seed=seed)
            runs.append(context.model.generate_batch(conversations, params))
        for index, (_document, _conclusion, pair, sources) in enumerate(tasks):
            prompt_tokens = sum(run[index].prompt_tokens for run in runs)
            generated_tokens = sum(run[index].completion_tokens for run in runs)
            kept = []
            for run in runs:
                candidate = parse_conclusion(run[index].text)
                if candidate and candidate not in kept and follows(candidate, list(pair)) is not None:
                    kept.append(candidate)
            for position, text in enumerate(kept or [""]):  # the tokens are counted once, on the first draft
                spent = (prompt_tokens, generated_tokens) if position == 0 else (0, 0)
                yield Draft(text, "inference", sources, *spent)


class ChainInference:
    """The same conclusions as ``global`` (statements sharing a middle term, chained across a document's
    neighbourhood, two rounds), written by the rules of :mod:`kadapt.statements` instead of the model: every
    conclusion the premises within two shared terms license (terms match as written, casefolded: "employees"
    does not chain with "employee"), in the premises' shapes ("A tove is a kind of glon.", "Every tove eats
    plim.", "No glon are zaik."). No model, so it costs nothing on text with no categorical statements, where
    the embedded model writing ``global``'s conclusions finds a valid one for only some premise pairs. Each
    output names its documents as ``global``'s do."""

    name = "chain"
    scope = "global"
    description = "Conclusions chaining a document's statements with related documents', derived by rules."
    batch_documents = 64
    rounds = GlobalInference.rounds

    def dependency(self, document: SourceDocument, context: AugmentContext) -> str:
        return context.kb_hash()

    def augment(self, documents: Sequence[SourceDocument], context: AugmentContext) -> Iterator[Draft]:
        tasks = _conclusion_tasks(documents, context, self.rounds, self.name)
        yield from _without_conclusions(documents, tasks)
        for _document, conclusion, _pair, sources in tasks:
            yield Draft(conclusion.text, "inference", sources)


# conclusions kept per document: a term many statements share (a hub: "All X are staff", "All staff are Y")
# licenses a number of conclusions that grows with their product
MAX_CONCLUSIONS = 64


def _conclusion_tasks(
    documents: Sequence[SourceDocument], context: AugmentContext, rounds: int, name: str
) -> list[tuple]:
    """(document, conclusion, the premise pair it chains, the ids of the documents stating them, this document
    first) for every conclusion that belongs to one of ``documents`` (the one stating its subject's premise, so
    that each conclusion is written once), at most ``MAX_CONCLUSIONS`` each (how many documents license more is
    the ``capped`` count of augmenter ``name`` in the run's summary). The conclusions of a neighbourhood are
    derived once, from its statements in one order, for all the documents that share it."""
    statements = _kb_statements(context)
    terms = _term_documents(context, statements)
    pools = context.stats.setdefault("conclusions", {})  # documents of one neighbourhood share its pool
    capped = 0
    tasks = []
    for document in documents:
        pool = _linked_statements(document.id, statements, terms, rounds)
        key = (frozenset(pool), rounds)
        if key not in pools:
            pools[key] = _derive(pool, rounds)
        by_root, parents, cut = pools[key]
        own = list(dict.fromkeys(statements.get(document.id, [])))
        mine = [
            (document, conclusion, pair, tuple(dict.fromkeys(_origins(pair, pool, parents))))
            for statement in own
            for conclusion, pair in by_root.get(statement, [])
        ]
        if len(mine) > MAX_CONCLUSIONS or cut.intersection(own):
            capped += 1
        tasks += mine[:MAX_CONCLUSIONS]
    if capped:
        summary = context.stats.setdefault("summary", {}).setdefault(name, {})
        summary["capped"] = summary.get("capped", 0) + capped
    return tasks


def _derive(pool: dict, rounds: int) -> tuple[dict, dict, set]:
    """The conclusions of a neighbourhood's statements by the premise about their subject (the document stating
    it owns them; at most ``MAX_CONCLUSIONS`` each), each conclusion's premise pair, and the premises that
    license more than that (their conclusions were cut)."""
    cap = MAX_CONCLUSIONS + 1  # one more than is kept tells a premise whose conclusions were cut
    derived = conclusions(sorted(pool, key=_statement_order), rounds, limit=cap * max(1, len(pool)), per_subject=cap)
    by_root: dict = {}
    parents: dict = {}
    for conclusion, pair in derived:
        parents[conclusion] = pair
        root = pair[0]
        while root in parents:
            root = parents[root][0]
        by_root.setdefault(root, []).append((conclusion, pair))
    cut = {root for root, found in by_root.items() if len(found) > MAX_CONCLUSIONS}
    return {root: found[:MAX_CONCLUSIONS] for root, found in by_root.items()}, parents, cut


def _statement_order(statement) -> tuple:
    return (statement.subject.casefold(), statement.predicate.casefold(), statement.quantifier, statement.verb,
            statement.style, statement.subject, statement.predicate)  # fmt: skip


def _without_conclusions(documents: Sequence[SourceDocument], tasks: list[tuple]) -> Iterator[Draft]:
    """An empty draft (augmented, nothing written) for each document no conclusion belongs to."""
    written = {document.id for document, *_ in tasks}
    for document in documents:
        if document.id not in written:
            yield Draft("", "inference", (document.id,))


def _kb_statements(context: AugmentContext) -> dict[str, list]:
    """Each KB document's categorical statements, parsed once per augmenter run."""
    cached = context.stats.get("global-statements")
    if cached is None:
        cached = {}
        for document in context.documents:
            parsed = (parse_statement(sentence) for sentence in sentences(document.text, min_words=1))
            cached[document.id] = [statement for statement in parsed if statement is not None]
        context.stats["global-statements"] = cached
    return cached


def _origins(premises, pool: dict, derived: dict) -> Iterator[str]:
    """The documents stating ``premises``, through the premises of any that an earlier round derived."""
    for premise in premises:
        if premise in pool:
            yield pool[premise][0]
        else:
            yield from _origins(derived[premise], pool, derived)


def _term_documents(context: AugmentContext, statements: dict[str, list]) -> dict[str, set[str]]:
    """The documents stating something about each term (casefolded), built once per augmenter run."""
    index = context.stats.get("global-terms")
    if index is None:
        index = {}
        for doc_id, found in statements.items():
            for statement in found:
                for term in (statement.subject, statement.predicate):
                    index.setdefault(term.casefold(), set()).add(doc_id)
        context.stats["global-terms"] = index
    return index


def _linked_statements(document_id: str, statements: dict[str, list], terms: dict[str, set[str]], hops: int) -> dict:
    """The statements of the document and of the documents within ``hops`` shared terms of it (its
    neighbourhood in the KB), each mapped to the documents that state it, this document first."""
    linked, seen = {document_id}, set()
    for _ in range(hops):
        found = (statement for doc_id in linked for statement in statements.get(doc_id, []))
        reached = {term.casefold() for statement in found for term in (statement.subject, statement.predicate)}
        linked |= {doc_id for term in reached - seen for doc_id in terms.get(term, ())}
        seen |= reached
    pool: dict = {}
    for doc_id in [document_id, *sorted(linked - {document_id})]:
        for statement in statements.get(doc_id, []):
            pool.setdefault(statement, []).append(doc_id)
    return pool


@hookimpl
def register_augmenters(register):
    register(SentenceSplit())
    register(ReverseTraining())
    register(LocalRewrite())
    register(GlobalInference())
    register(ChainInference())
