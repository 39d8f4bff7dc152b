"""Carves checked fine-tuning examples into train/validation/test splits and reports on them: duplicates,
leakage between files, label imbalance, split sizes."""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from db.fine_tuning_jobs import NewExample
from services.config import ServiceSettings
from services.errors import InputError
from services.fine_tune_data import LABEL_TASKS, ParsedFile, ParsedLine

SPLITS = ("train", "validation", "test")


@dataclass
class SplitPlan:
    """The examples in their splits, and what the checks found along the way."""

    examples: list[NewExample]
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def sizes(self) -> dict[str, int]:
        counts = Counter(example.split for example in self.examples)
        return {split: counts.get(split, 0) for split in SPLITS}

    def label_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, Counter] = {split: Counter() for split in SPLITS}
        for example in self.examples:
            counts[example.split][example.target] += 1
        return {split: dict(sorted(counter.items())) for split, counter in counts.items()}


def _lines_text(lines: list[int], limit: int) -> str:
    shown = ", ".join(str(line) for line in lines[:limit])
    return shown + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


def duplicate_warnings(parsed: ParsedFile, settings: ServiceSettings) -> list[dict[str, Any]]:
    """A warning per file with repeated examples (same image and text); repeats with another target say so."""
    groups: dict[tuple[str, str], list[ParsedLine]] = defaultdict(list)
    for line in parsed.lines:
        groups[line.key].append(line)
    repeated = [group for group in groups.values() if len(group) > 1]
    if not repeated:
        return []
    lines = sorted(line.line for group in repeated for line in group[1:])
    conflicting = sorted(group[0].line for group in repeated if len({line.target for line in group}) > 1)
    message = (f"{parsed.field}: {len(lines)} line(s) repeat an earlier example (same image and text): lines "
               f"{_lines_text(lines, settings.fine_tune_reported_lines)}; repeats stay together in one split")
    if conflicting:
        message += (f"; {len(conflicting)} repeated example(s) carry different targets (first at lines "
                    f"{_lines_text(conflicting, settings.fine_tune_reported_lines)})")
    return [{"code": "duplicates", "file": parsed.field, "message": message, "lines": lines[:100]}]


def check_leakage(training: ParsedFile, validation: ParsedFile, settings: ServiceSettings) -> None:
    """A 400 naming validation_file when any of its examples is also in the training file (a leak)."""
    first_in_training: dict[tuple[str, str], int] = {}
    for line in training.lines:
        first_in_training.setdefault(line.key, line.line)
    leaks = [(line.line, first_in_training[line.key]) for line in validation.lines if line.key in first_in_training]
    if leaks:
        shown = "; ".join(f"line {mine} = training_file line {theirs}"
                          for mine, theirs in leaks[:settings.fine_tune_reported_lines])
        raise InputError(validation.field, f"{len(leaks)} example(s) of the validation file are also in the training "
                         f"file (same image and text), which would leak into validation: {shown}", 400)


def _digest(key: tuple[str, str]) -> str:
    return hashlib.sha256(f"{key[0]}\x00{key[1]}".encode()).hexdigest()


def _carve_stratum(lines: list[ParsedLine], *, validation_share: float, test_share: float) -> list[NewExample]:
    """One stratum's lines in splits: groups of repeats ordered by their hash (deterministic), test first."""
    groups: dict[tuple[str, str], list[ParsedLine]] = defaultdict(list)
    for line in lines:
        groups[line.key].append(line)
    want = {"test": round(len(lines) * test_share), "validation": round(len(lines) * validation_share)}
    taken = {"test": 0, "validation": 0}
    examples = []
    for key in sorted(groups, key=_digest):
        split = next((name for name in ("test", "validation") if taken[name] < want[name]), "train")
        taken[split] = taken.get(split, 0) + len(groups[key])
        examples += [NewExample(split, line.line, line.image_sha256, line.text, line.target) for line in groups[key]]
    return examples


def carve_splits(task: str, training: ParsedFile, validation: ParsedFile | None,
                 settings: ServiceSettings) -> SplitPlan:
    """Test (and validation, when no validation file is given) carved from the training file, per label for label
    tasks so each class is in each split; repeats stay in one split; the same data always carves the same way."""
    strata: dict[str, list[ParsedLine]] = defaultdict(list)
    for line in training.lines:
        strata[line.target if task in LABEL_TASKS else ""].append(line)
    validation_share = 0.0 if validation is not None else settings.fine_tune_validation_fraction
    examples = [example for _, lines in sorted(strata.items()) for example in
                _carve_stratum(lines, validation_share=validation_share, test_share=settings.fine_tune_test_fraction)]
    if validation is not None:
        examples += [NewExample("validation", line.line, line.image_sha256, line.text, line.target)
                     for line in validation.lines]
    examples.sort(key=lambda example: (SPLITS.index(example.split), example.line))
    return SplitPlan(examples=examples)


def check_sizes(plan: SplitPlan, training: ParsedFile, validation: ParsedFile | None,
                settings: ServiceSettings) -> None:
    """A 400 naming the file with too few examples, or training_file when a split it feeds came out empty."""
    if validation is not None and not validation.lines:
        raise InputError(validation.field, "the validation file has no examples", 400)
    if len(training.lines) < settings.fine_tune_min_examples:
        raise InputError(training.field, f"{len(training.lines)} example(s); at least "
                         f"{settings.fine_tune_min_examples} are needed (a share is kept for validation and test)", 400)
    empty = [split for split, size in plan.sizes().items() if size == 0]
    if empty:
        raise InputError(training.field, f"too few examples: the {' and '.join(empty)} split(s) would be empty; "
                         f"add examples", 400)


def label_warnings(plan: SplitPlan, labels: tuple[str, ...], settings: ServiceSettings) -> list[dict[str, Any]]:
    """Imbalance (the largest class over `ratio` times the smallest, or a class with no examples) and classes too
    small to reach the test split."""
    total = Counter(example.target for example in plan.examples)
    counts = {label: total.get(label, 0) for label in labels}
    warnings = []
    missing = [label for label, count in counts.items() if count == 0]
    if missing:
        warnings.append({"code": "missing_label", "labels": missing,
                         "message": f"no examples of label(s) {', '.join(missing)}: the model cannot learn them"})
    present = [count for count in counts.values() if count]
    if present and max(present) > settings.fine_tune_imbalance_ratio * min(present):
        warnings.append({"code": "imbalance", "label_counts": counts,
                         "message": f"labels are imbalanced: the largest class has {max(present)} examples, the "
                                    f"smallest {min(present)} (over {settings.fine_tune_imbalance_ratio:g}x); "
                                    f"counts {counts}"})
    in_test = plan.label_counts()["test"]
    thin = [label for label, count in counts.items() if count and not in_test.get(label)]
    if thin:
        warnings.append({"code": "few_test_examples", "labels": thin,
                         "message": f"label(s) {', '.join(thin)} have too few examples for the test split: their "
                                    f"test score will not be measured"})
    return warnings
