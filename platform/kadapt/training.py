"""LoRA fine-tuning on packed examples, with checkpoints a killed job resumes from.

Short examples are packed into rows of ``row_tokens`` tokens (first-fit decreasing); a block-diagonal
causal mask and per-example position ids keep packed examples from seeing each other, so packing changes
nothing but the amount of padding. The loss counts real next tokens inside each example only.

An example is a plain text (loss on every token) or a :class:`ChatExample`: a question and its answer rendered
with the base model's chat template exactly as serving renders a chat (system prompt, user question, then the
assistant's answer and end token), with the loss on the answer and its end token only.

Replay examples (the base model's own answers, which anchor an adapter's general behaviour) need not be learnt
by heart: they are spread over the epochs, each epoch training on every example plus its own share of them, so
that each is seen ``replay_passes`` times in all instead of once per epoch.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kadapt.errors import InvalidInput
from kadapt.paths import publish_folder

__all__ = [
    "ChatExample",
    "PackedBatch",
    "TrainConfig",
    "TrainResult",
    "encode_example",
    "pack",
    "train_lora",
    "token_losses",
    "converged",
    "schedule",
    "training_data_hash",
]


@dataclass(frozen=True)
class ChatExample:
    """A chat turn to train on: the answer to ``question`` under ``system``, learned as the assistant's reply."""

    system: str
    question: str
    answer: str


Example = str | ChatExample


@dataclass
class TrainConfig:
    """How an adapter is trained: the one home of the training defaults (``kadapt train``, the API's train
    request and the adapt loop's config start from these; ``KADAPT_ADAPT_EPOCHS``, ``KADAPT_ADAPT_LEARNING_RATE``,
    ``KADAPT_ADAPT_EARLY_STOP_LOSS`` and ``KADAPT_ADAPT_REPLAY_PASSES`` are what the adapt loop sets instead)."""

    rank: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (kadapt train sets it to twice the rank)."})
    dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    target_modules: str | list[str] = field(default="all-linear", metadata={"help": "Modules LoRA adapts."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    epochs: int = field(default=10, metadata={"help": "Passes over the data."})
    max_steps: int | None = field(default=None, metadata={"help": "Stop after this many steps (default: epochs)."})
    row_tokens: int = field(default=256, metadata={"help": "Tokens per packed row."})
    rows_per_step: int = field(default=8, metadata={"help": "Packed rows per optimizer step."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of the steps spent warming up."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Random seed."})
    checkpoint_every: int = field(default=10, metadata={"help": "Steps between checkpoints."})
    early_stop_loss: float = field(
        default=0.0,
        metadata={
            "help": "Stop once this many epochs in a row (early_stop_epochs) each had a mean training loss at or "
            "under this on the texts (replay examples left out); 0 trains every epoch."
        },
    )
    early_stop_epochs: int = field(default=2, metadata={"help": "Epochs in a row under early_stop_loss to stop."})
    replay_passes: int = field(
        default=6,
        metadata={
            "help": "Times each replay example (the base model's own answers) is trained on in the whole run, a "
            "share of them each epoch; at least epochs: all of them every epoch."
        },
    )
    # matrix products in bfloat16 as KADAPT_PRECISION says (kadapt.models.precision: by default where the CPU has
    # bf16 instructions; weights, gradients and optimizer state stay float32): one step of the embedded model on
    # 2 x 256 tokens 2.1 s -> 1.0 s on such a CPU; False keeps float32 whatever the setting
    bf16: bool = field(default=True, metadata={"help": "Matrix products in bfloat16 as KADAPT_PRECISION allows."})

    @staticmethod
    def help(name: str) -> str:
        """The help text of field ``name`` (for the CLI's options and the API's schema)."""
        return next(item.metadata["help"] for item in fields(TrainConfig) if item.name == name)

    def __post_init__(self) -> None:
        sizes = (self.rank, self.epochs, self.rows_per_step, self.early_stop_epochs, self.replay_passes)
        if min(sizes) < 1 or self.row_tokens < 8:
            raise InvalidInput(f"invalid training config {asdict(self)}: rank, epochs and sizes must be positive")
        if not 0 < self.learning_rate < 1:
            raise InvalidInput(f"learning_rate={self.learning_rate} is out of range (0, 1); try 1e-3")
        if not 0 <= self.early_stop_loss < 100:
            raise InvalidInput(f"early_stop_loss={self.early_stop_loss} is out of range [0, 100); try 0.02")


@dataclass
class TrainResult:
    examples: int  # trained on every epoch (the replay examples are replay_examples)
    tokens: int  # real (non-padding) tokens per epoch (the mean: each epoch has its share of the replay examples)
    rows: int  # packed rows per epoch (the mean)
    steps: int
    seconds: float
    final_loss: float
    loss_curve: list[float] = field(default_factory=list)
    resumed_from_step: int = 0
    # a checkpoint of other training data (or settings) found in the work dir: not resumed from, at this step
    discarded_checkpoint_step: int = 0
    tokens_per_second: float = 0.0
    device: str = "cpu"
    stopped_early: bool = False  # the training loss had converged (TrainConfig.early_stop_loss) before the last epoch
    replay_examples: int = 0  # spread over the epochs, each seen TrainConfig.replay_passes times
    # each step's loss on the texts alone, without the replay examples (None: the step had none): what early
    # stopping waits for, since the replay examples, seen a few times only, are never learnt by heart
    text_loss_curve: list[float | None] = field(default_factory=list)


@dataclass
class Schedule:
    """Each epoch's packed rows and where its steps begin: the steps of a run, in order."""

    epochs: list[list[list[list[int]]]]
    rows_per_step: int

    @property
    def mean_tokens(self) -> int:
        """Tokens an epoch trains on, the mean of the epochs."""
        return round(sum(len(piece) for rows in self.epochs for row in rows for piece in row) / len(self.epochs))

    @property
    def mean_rows(self) -> int:
        return round(sum(map(len, self.epochs)) / len(self.epochs))

    @property
    def epoch_steps(self) -> list[int]:
        return [math.ceil(len(rows) / self.rows_per_step) for rows in self.epochs]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, step within it) of ``step``; past the last epoch the epochs begin again (``max_steps``)."""
        ends = _epoch_ends(self.epoch_steps, step + 1)
        epoch = bisect.bisect_right(ends, step)
        return epoch, step - (ends[epoch - 1] if epoch else 0)


def _epoch_ends(epoch_steps: Sequence[int], reaching: int) -> list[int]:
    """The step at which each epoch ends, epochs being ``epoch_steps`` steps long, until one ends at or past step
    ``reaching``: past the last epoch the epochs begin again (``max_steps``)."""
    ends, total = [], 0
    while total < reaching:
        for length in epoch_steps:
            total += length
            ends.append(total)
    return ends


def schedule(
    examples: Sequence[Sequence[int]],
    replay: Sequence[Sequence[int]],
    config: TrainConfig,
    refresh: Sequence[Sequence[int]] = (),
    refresh_passes: int = 0,
) -> Schedule:
    """The run's epochs: each packs every example with its share of ``replay`` — a window, moving one share per
    epoch, over the replay examples in a seeded order — sized so each replay example is trained on about
    ``config.replay_passes`` times in all (every epoch when that is at least the epochs). ``refresh`` examples (a
    warm start's unchanged documents, when its changed ones get an epoch per pass) get such a window of their own,
    for ``refresh_passes``; unlike replay they count for early stopping."""
    replay = [Piece(example, getattr(example, "learned", None), replay=True) for example in replay]
    replays = _windows(replay, config.replay_passes, config, random.Random(config.seed))
    refreshes = _windows(list(refresh), refresh_passes, config, random.Random(f"{config.seed}:refresh"))
    if replays is None and refreshes is None:  # every example every epoch: one packing
        rows = pack([*examples, *replay, *refresh], config.row_tokens)
        return Schedule([rows] * config.epochs, config.rows_per_step)
    epochs = []
    for epoch in range(config.epochs):
        window = (replays[epoch] if replays else replay) + (refreshes[epoch] if refreshes else list(refresh))
        epochs.append(pack([*examples, *window], config.row_tokens))
    return Schedule(epochs, config.rows_per_step)


def _windows(items: list, passes: int, config: TrainConfig, rng: random.Random) -> list[list] | None:
    """Each epoch's share of ``items`` so that each is trained on about ``passes`` times over the run: a window
    moving one share per epoch over them in ``rng``'s order; None when every epoch has them all."""
    if not items or passes >= config.epochs:
        return None
    order = list(range(len(items)))
    rng.shuffle(order)
    share = math.ceil(len(items) * passes / config.epochs)
    return [[items[order[(epoch * share + offset) % len(items)]] for offset in range(share)]
            for epoch in range(config.epochs)]  # fmt: skip


@dataclass
class PackedBatch:
    input_ids: Any
    attention_mask: Any  # (rows, 1, L, L) bool: block-diagonal causal
    position_ids: Any
    segments: Any  # (rows, L) example index within the row, -1 for padding
    real_tokens: int
    targets: Any = None  # (rows, L) bool: the token is learned (predicted from the ones before); None: all are
    replay: Any = None  # (rows, L) bool: the token belongs to a replay example; None: none does


class Piece(list):
    """Token ids of (a window of) one example, with ``learned``: which of them the loss counts, and ``replay``:
    whether the example is a replay example (trained on, but not what early stopping waits for)."""

    learned: list[bool]
    replay: bool

    def __init__(self, ids: Sequence[int], learned: Sequence[bool] | None = None, replay: bool = False):
        super().__init__(ids)
        self.learned = list(learned) if learned is not None else [True] * len(ids)
        self.replay = replay


def encode_example(tokenizer, example: Example) -> Piece:
    """An example's token ids and the tokens its loss counts: every token (and the end token) of a text; the
    answer and its end token of a chat, whose prompt is the one serving builds (the template's generation
    prompt after the system message and the question)."""
    if isinstance(example, str):
        return Piece(tokenizer(example, add_special_tokens=False).input_ids + [tokenizer.eos_token_id])
    messages = [{"role": "system", "content": example.system}, {"role": "user", "content": example.question}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": example.answer}], tokenize=False)
    if not whole.startswith(prompt):
        raise InvalidInput("the base model's chat template does not render a reply after its generation prompt")
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    reply_ids = tokenizer(whole[len(prompt) :], add_special_tokens=False).input_ids
    if tokenizer.eos_token_id in reply_ids:  # what the template adds after the end token is never generated
        reply_ids = reply_ids[: reply_ids.index(tokenizer.eos_token_id) + 1]
    else:
        reply_ids.append(tokenizer.eos_token_id)
    return Piece(prompt_ids + reply_ids, [False] * len(prompt_ids) + [True] * len(reply_ids))


def pack(examples: Sequence[Sequence[int]], row_tokens: int) -> list[list[list[int]]]:
    """First-fit decreasing: rows of at most ``row_tokens`` tokens, each a list of whole examples.

    Examples longer than a row are cut into row-sized windows first; a :class:`Piece` keeps its learned
    tokens through the cut."""
    pieces: list[Piece] = []
    for example in examples:
        learned = example.learned if isinstance(example, Piece) else [True] * len(example)
        for start in range(0, len(example), row_tokens):
            window = slice(start, start + row_tokens)
            piece = Piece(example[window], learned[window], getattr(example, "replay", False))
            if len(piece) >= 2 and any(piece.learned[1:]):
                pieces.append(piece)
    pieces.sort(key=len, reverse=True)
    rows: list[list[list[int]]] = []
    room: list[int] = []
    for piece in pieces:
        for index, free in enumerate(room):
            if len(piece) <= free:
                rows[index].append(piece)
                room[index] -= len(piece)
                break
        else:
            rows.append([piece])
            room.append(row_tokens - len(piece))
    return rows


def collate(rows: Sequence[list[list[int]]], pad_id: int, device: str) -> PackedBatch:
    import torch

    width = max(sum(len(piece) for piece in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    targets = torch.zeros((len(rows), width), dtype=torch.bool)
    replay = torch.zeros((len(rows), width), dtype=torch.bool)
    for row_index, row in enumerate(rows):
        offset = 0
        for piece_index, piece in enumerate(row):
            end = offset + len(piece)
            input_ids[row_index, offset:end] = torch.tensor(piece)
            learned = piece.learned if isinstance(piece, Piece) else [True] * len(piece)
            targets[row_index, offset:end] = torch.tensor(learned, dtype=torch.bool)
            positions[row_index, offset:end] = torch.arange(len(piece))
            replay[row_index, offset:end] = getattr(piece, "replay", False)
            segments[row_index, offset:end] = piece_index
            offset = end
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] >= 0)
    mask = causal[None] & same
    mask |= torch.eye(width, dtype=torch.bool)[None]  # padding rows attend to themselves: no NaN in softmax
    return PackedBatch(
        input_ids=input_ids.to(device),
        attention_mask=mask[:, None].to(device),
        position_ids=positions.to(device),
        segments=segments.to(device),
        real_tokens=int((segments >= 0).sum()),
        targets=targets.to(device),
        replay=replay.to(device) if bool(replay.any()) else None,
    )


def token_losses(logits, batch: PackedBatch):
    """(next-token losses at the positions whose next token belongs to the same example and is learned, whether
    each is a replay example's)."""
    import torch

    targets = batch.input_ids[:, 1:]
    valid = (batch.segments[:, :-1] == batch.segments[:, 1:]) & (batch.segments[:, 1:] >= 0)
    if batch.targets is not None:
        valid &= batch.targets[:, 1:]
    losses = torch.nn.functional.cross_entropy(logits[:, :-1][valid].float(), targets[valid], reduction="none")
    replay = batch.replay[:, 1:][valid] if batch.replay is not None else torch.zeros_like(losses, dtype=torch.bool)
    return losses, replay


def packed_loss(logits, batch: PackedBatch):
    """Mean next-token loss over positions whose next token belongs to the same example and is learned."""
    return token_losses(logits, batch)[0].mean()


def training_data_hash(
    texts: Sequence[Example],
    config: TrainConfig,
    init_from: Path | None = None,
    replay: Sequence[Example] = (),
    refresh: Sequence[Example] = (),
    refresh_passes: int = 0,
) -> str:
    """SHA-256 over the training examples (in order), the replay and refresh examples, the config and the adapter a
    warm start continues: what a checkpoint must match to be resumed."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    if init_from is not None:
        digest.update(f"\x00init:{init_from}".encode())
    for group, examples in enumerate((texts, replay, refresh)):
        if group and examples:  # where a length would be: no length begins 0xff, so no text list hashes like it
            digest.update(b"\xffreplay" if group == 1 else f"\xffrefresh:{refresh_passes}".encode())
        for text in examples:
            if isinstance(text, ChatExample):  # tagged: no plain text hashes like a chat example
                text = "\x00chat" + json.dumps([text.system, text.question, text.answer])
            encoded = text.encode("utf-8", "surrogatepass")
            digest.update(len(encoded).to_bytes(8, "big"))  # lengths first: ["ab", "c"] and ["a", "bc"] differ
            digest.update(encoded)
    return digest.hexdigest()


def _save_checkpoint(model, optimizer, scheduler, state: dict[str, Any], directory: Path) -> None:
    import torch

    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()},
        staging / "trainer.pt",
    )
    (staging / "state.json").write_text(json.dumps(state))
    publish_folder(staging, directory, replace=True)  # the checkpoint directory is always whole: old or new


def _load_for_training(base_path: str, config: TrainConfig, base_model_name: str | None, init_from: Path | None = None):
    """(tokenizer, the base model with a fresh LoRA adapter — or ``init_from``'s, trainable —, device, whether matrix
    products run in bf16)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from kadapt.models.base import MODEL_LOAD_LOCK
    from kadapt.models.precision import cpu_bf16, cuda_dtype
    from kadapt.settings import get_settings

    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = get_settings().precision if config.bf16 else "fp32"
    autocast = device == "cpu" and cpu_bf16(precision)
    torch.manual_seed(config.seed)
    with MODEL_LOAD_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(base_path)
        model = AutoModelForCausalLM.from_pretrained(
            base_path, dtype=cuda_dtype(precision) if device == "cuda" else torch.float32
        ).to(device)
    model.config.use_cache = False
    if base_model_name:
        model.config.name_or_path = base_model_name
    if init_from is not None:
        return tokenizer, PeftModel.from_pretrained(model, str(init_from), is_trainable=True), device, autocast
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    return tokenizer, get_peft_model(model, lora), device, autocast


def _optimizer(model, config: TrainConfig, total_steps: int):
    """(trainable parameters, AdamW, its schedule: linear warm-up, then linear decay to zero)."""
    import torch

    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    warmup = max(1, int(total_steps * config.warmup_ratio))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return trainable, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _resume(checkpoint: Path, data_hash: str, model, optimizer, scheduler, device: str) -> tuple[int, tuple, int, int]:
    """(step, (losses so far, the texts' losses so far), step resumed from, step of a discarded checkpoint) from the
    checkpoint, when it was made from the same data and config (mixing two data sets in one adapter: start over
    instead)."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    discarded = 0
    if (checkpoint / "state.json").exists():
        state = json.loads((checkpoint / "state.json").read_text())
        if state.get("data_hash") != data_hash:
            discarded = int(state.get("step", 0))
            shutil.rmtree(checkpoint)
    if not (checkpoint / "state.json").exists():
        return 0, ([], []), 0, discarded
    weights = load_file(checkpoint / "adapter_model.safetensors", device=device)
    set_peft_model_state_dict(model, weights)
    saved = torch.load(checkpoint / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    losses = list(state["losses"]), list(state.get("text_losses", state["losses"]))
    return state["step"], losses, state["step"], discarded


def _published(output_dir: Path, work_dir: Path) -> TrainResult | None:
    """The result of the adapter published at ``output_dir`` (atomically, so complete), its work dir removed."""
    if not (output_dir / "kadapt.json").is_file():
        return None
    shutil.rmtree(work_dir, ignore_errors=True)
    return TrainResult(**json.loads((output_dir / "kadapt.json").read_text())["stats"])


def _encoded_schedule(tokenizer, config: TrainConfig, texts, replay, refresh, refresh_passes: int) -> Schedule:
    """The run's :func:`schedule` of its examples, tokenized."""
    groups = [[encode_example(tokenizer, text) for text in group] for group in (texts, replay, refresh)]
    return schedule(groups[0], groups[1], config, groups[2], refresh_passes)


def train_lora(
    base_path: str,
    texts: Sequence[Example],
    output_dir: Path,
    config: TrainConfig,
    *,
    work_dir: Path,
    progress: Callable[[int, int, float], None] | None = None,
    base_model_name: str | None = None,
    init_from: Path | None = None,
    replay: Sequence[Example] = (),
    refresh: Sequence[Example] = (),
    refresh_passes: int = 0,
) -> TrainResult:
    """Train a LoRA adapter on ``texts`` (plain texts and chat examples) every epoch, on ``replay`` (the base model's
    own answers) and ``refresh`` examples a share of each every epoch (:func:`schedule`), and write it to
    ``output_dir`` (a PEFT folder) atomically. ``work_dir`` holds the checkpoint, resumed from by a call with the
    same work dir, data, config and ``init_from`` (a PEFT folder a warm start begins with); otherwise training
    starts over. An adapter already published at ``output_dir`` (its process died before recording it) is returned."""
    if (published := _published(output_dir, work_dir)) is not None:
        return published
    if not texts:
        raise InvalidInput("nothing to train on: the KB has no documents (run `kadapt sync` first)")
    tokenizer, model, device, autocast = _load_for_training(base_path, config, base_model_name, init_from)
    plan = _encoded_schedule(tokenizer, config, texts, replay, refresh, refresh_passes)
    total_steps = config.max_steps or sum(plan.epoch_steps)
    trainable, optimizer, scheduler = _optimizer(model, config, total_steps)
    data_hash = training_data_hash(texts, config, init_from, replay, refresh, refresh_passes)
    checkpoint = work_dir / "checkpoint"
    step, (losses, text_losses), resumed_from, discarded = _resume(
        checkpoint, data_hash, model, optimizer, scheduler, device
    )
    model.train()
    started, tokens_done = time.perf_counter(), 0
    while step < total_steps:
        batch = _step_batch(plan, step, config, tokenizer, device)
        loss, text_loss = _step(model, batch, device, autocast, trainable, optimizer, scheduler)
        losses.append(loss)
        text_losses.append(text_loss)
        step += 1
        tokens_done += batch.real_tokens
        if progress:
            progress(step, total_steps, losses[-1])
        if step < total_steps and converged(text_losses, plan.epoch_steps, config):
            break  # the texts are learnt: the rest of the epochs would add nothing
        if step % config.checkpoint_every == 0 and step < total_steps:
            state = {"step": step, "losses": losses, "text_losses": text_losses, "data_hash": data_hash}
            _save_checkpoint(model, optimizer, scheduler, state, checkpoint)
    seconds = time.perf_counter() - started
    result = TrainResult(
        examples=len(texts) + len(refresh), tokens=plan.mean_tokens, rows=plan.mean_rows, steps=step,
        seconds=round(seconds, 2), final_loss=losses[-1] if losses else float("nan"), loss_curve=losses,
        resumed_from_step=resumed_from,
        discarded_checkpoint_step=discarded, device=device, stopped_early=step < total_steps,
        tokens_per_second=round(tokens_done / seconds, 1) if seconds else 0.0, replay_examples=len(replay),
        text_loss_curve=text_losses,
    )  # fmt: skip
    _publish_adapter(model, config, result, output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return result


def converged(losses: Sequence[float | None], epoch_steps: Sequence[int], config: TrainConfig) -> bool:
    """Whether training may stop at the end of the epoch ``losses`` (one per step so far, the texts' loss without
    the replay examples; None for a step of replay examples alone) ends, epochs being ``epoch_steps`` steps long:
    the last ``early_stop_epochs`` whole epochs each had a mean loss at or under ``early_stop_loss``. Checked only
    at epoch ends, so every example was seen as often in each epoch (a resumed run decides from its saved
    losses)."""
    if config.early_stop_loss <= 0 or not losses or not sum(epoch_steps):
        return False
    ends = _epoch_ends(epoch_steps, len(losses))
    if len(losses) not in ends:
        return False
    done = ends.index(len(losses)) + 1
    if done < config.early_stop_epochs:
        return False
    bounds = [0, *ends][done - config.early_stop_epochs : done + 1]
    epochs = [[loss for loss in losses[start:end] if loss is not None] for start, end in itertools.pairwise(bounds)]
    return all(epoch and sum(epoch) / len(epoch) <= config.early_stop_loss for epoch in epochs)


def _step_batch(plan: Schedule, step: int, config: TrainConfig, tokenizer, device: str) -> PackedBatch:
    """The rows step ``step`` trains on, collated: its share of its epoch's order of the rows, shuffled with a seed
    of the config's seed and the epoch (so a resumed run picks the same rows)."""
    epoch, index_in_epoch = plan.locate(step)
    rows = plan.epochs[epoch % len(plan.epochs)]
    order = list(range(len(rows)))
    random.Random(config.seed * 100_003 + epoch).shuffle(order)
    chosen = order[index_in_epoch * config.rows_per_step : (index_in_epoch + 1) * config.rows_per_step]
    return collate([rows[i] for i in chosen], tokenizer.pad_token_id or tokenizer.eos_token_id, device)


def _step(model, batch, device: str, autocast: bool, trainable, optimizer, scheduler) -> tuple[float, float | None]:
    """One optimizer step on ``batch``; (its loss, its loss without the replay examples: None when it had only
    those), rounded."""
    import torch

    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits
    losses, replay = token_losses(logits, batch)
    loss = losses.mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    texts = losses.detach()[~replay]
    return round(float(loss.detach()), 5), round(float(texts.mean()), 5) if texts.numel() else None


def _publish_adapter(model, config: TrainConfig, result: TrainResult, output_dir: Path) -> None:
    """The adapter and its record (``kadapt.json``: config and stats) at ``output_dir``, whole or not at all."""
    staging = output_dir.with_name(f".staging-{output_dir.name}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    (staging / "kadapt.json").write_text(json.dumps({"config": asdict(config), "stats": asdict(result)}, indent=2))
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    publish_folder(staging, output_dir)  # a half-written adapter is never at its final path, even after a crash
