"""Multiple-choice scoring in packed trees: each item's prompt once, its choices branching off it.

Items (the rest of a prompt after a prefix all prompts share, then each choice) are packed first-fit into
rows; a row's attention mask lets a token see the shared prefix, its own item's prompt and, inside a choice,
that choice's earlier tokens, so one forward scores many items without their choices seeing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "PackedTrees",
    "ScoreTree",
    "causal_lm_of",
    "collate_trees",
    "forward_groups",
    "pack_trees",
    "target_log_probs",
]

HEAD_CHUNK = 512  # positions sent through the output layer at once (bounds the vocabulary-wide logits)


@dataclass
class ScoreTree:
    """One item to score: the rest of its prompt after the shared prefix, then each choice branching off it."""

    index: int
    suffix: list[int]
    choices: list[list[int]]

    @property
    def size(self) -> int:
        return len(self.suffix) + sum(len(choice) for choice in self.choices)


@dataclass
class PackedTrees:
    input_ids: Any
    attention_mask: Any  # (rows, 1, L, shared + L) bool
    position_ids: Any
    predictor_rows: Any  # (P,) row and column of each position whose next-token prediction is needed
    predictor_columns: Any
    predictor_of: Any  # (T,) for each choice token: the index of its predicting position in 0..P-1
    targets: Any  # (T,) the choice token predicted there
    slots: Any  # (T,) which choice the token belongs to, in 0..slot_count-1
    slot_keys: list[tuple[int, int]]  # (item index, choice index) of each slot
    slot_count: int


def causal_lm_of(network):
    """The transformers causal LM under a PEFT wrapper (its layers carry the active adapter)."""
    return network.get_base_model() if hasattr(network, "get_base_model") else network


def pack_trees(trees: list[ScoreTree], row_tokens: int) -> list[list[ScoreTree]]:
    """First-fit decreasing into rows of at most ``row_tokens`` tokens; an item larger than that gets its own."""
    rows: list[list[ScoreTree]] = []
    room: list[int] = []
    for tree in sorted(trees, key=lambda tree: tree.size, reverse=True):
        for index, free in enumerate(room):
            if tree.size <= free:
                rows[index].append(tree)
                room[index] -= tree.size
                break
        else:
            rows.append([tree])
            room.append(row_tokens - tree.size)
    return rows


def forward_groups(rows: list[list[ScoreTree]], budget: int) -> list[list[list[ScoreTree]]]:
    """Consecutive rows batched while rows x the widest row stays within ``budget`` tokens."""
    groups: list[list[list[ScoreTree]]] = []
    width = 0
    for row in rows:
        size = sum(tree.size for tree in row)
        if groups and (len(groups[-1]) + 1) * max(width, size) <= budget:
            groups[-1].append(row)
            width = max(width, size)
        else:
            groups.append([row])
            width = size
    return groups


def collate_trees(rows: list[list[ScoreTree]], shared: int, pad_id: int, device: str) -> PackedTrees:
    """Token rows [suffix 1][choices of 1][suffix 2][choices of 2]... with a mask in which a token sees the
    shared prefix, its item's suffix (causally) and, in a choice, that choice's earlier tokens."""
    import torch

    width = max(sum(tree.size for tree in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    items = torch.full((len(rows), width), -1, dtype=torch.long)  # item within the row; -1 for padding
    branches = torch.zeros((len(rows), width), dtype=torch.long)  # 0: the item's prompt; c + 1: its choice c
    predictors: dict[tuple[int, int], int] = {}
    predictor_of, targets, slots, slot_keys = [], [], [], []
    for row_index, row in enumerate(rows):
        offset = 0
        for item_in_row, tree in enumerate(row):
            suffix_end = offset + len(tree.suffix)
            input_ids[row_index, offset:suffix_end] = torch.tensor(tree.suffix)
            positions[row_index, offset:suffix_end] = torch.arange(shared, shared + len(tree.suffix))
            items[row_index, offset:suffix_end] = item_in_row
            offset = suffix_end
            for choice_index, choice in enumerate(tree.choices):
                end = offset + len(choice)
                if choice:
                    input_ids[row_index, offset:end] = torch.tensor(choice)
                    start = shared + len(tree.suffix)
                    positions[row_index, offset:end] = torch.arange(start, start + len(choice))
                    items[row_index, offset:end] = item_in_row
                    branches[row_index, offset:end] = choice_index + 1
                slot = len(slot_keys)
                slot_keys.append((tree.index, choice_index))
                # the first choice token is predicted by the prompt's last token, the others by their predecessor
                columns = [suffix_end - 1, *range(offset, end - 1)]
                for column, token in zip(columns, choice, strict=False):
                    predictor_of.append(predictors.setdefault((row_index, column), len(predictors)))
                    targets.append(token)
                    slots.append(slot)
                offset = end
    causal = torch.tril(torch.ones(width, width, dtype=torch.bool))
    same_item = (items[:, :, None] == items[:, None, :]) & (items[:, None, :] >= 0)
    visible_branch = (branches[:, None, :] == 0) | (branches[:, :, None] == branches[:, None, :])
    mask = causal[None] & same_item & visible_branch
    mask |= torch.eye(width, dtype=torch.bool)[None]  # padding attends to itself: no NaN in the softmax
    if shared:
        mask = torch.cat([torch.ones((len(rows), width, shared), dtype=torch.bool), mask], dim=-1)
    where = torch.tensor(list(predictors), dtype=torch.long).view(-1, 2)
    return PackedTrees(
        input_ids=input_ids.to(device),
        attention_mask=mask[:, None].to(device),
        position_ids=positions.to(device),
        predictor_rows=where[:, 0].to(device),
        predictor_columns=where[:, 1].to(device),
        predictor_of=torch.tensor(predictor_of, dtype=torch.long, device=device),
        targets=torch.tensor(targets, dtype=torch.long, device=device),
        slots=torch.tensor(slots, dtype=torch.long),
        slot_keys=slot_keys,
        slot_count=len(slot_keys),
    )


def target_log_probs(causal_lm, hidden, predictor_of, targets):
    """log p(target | position) for each (predicting position, target) pair, through the output layer in chunks."""
    import torch

    head = causal_lm.get_output_embeddings()
    softcap = getattr(causal_lm.config, "final_logit_softcapping", None)
    normalizers = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    picked = torch.empty(targets.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], HEAD_CHUNK):
        end = min(start + HEAD_CHUNK, hidden.shape[0])
        logits = head(hidden[start:end]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        normalizers[start:end] = torch.logsumexp(logits, dim=-1)
        inside = (predictor_of >= start) & (predictor_of < end)
        picked[inside] = logits[predictor_of[inside] - start, targets[inside]]
    return picked - normalizers[predictor_of]
