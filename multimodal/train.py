"""Train a LensQ checkpoint: stage 1 contrastive, stage 2 projector + LM (full or LoRA), stage 3 sentiment head.

    python -m multimodal.train --preset lensq-tiny --out multimodal/checkpoints/lensq-tiny
    python -m multimodal.train --preset lensq-smol --vision-from multimodal/checkpoints/lensq-tiny \
        --stages generative,sentiment --out multimodal/checkpoints/lensq-smol
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import stages
from safetensors.torch import load_file

from .checkpoint import build_model, load_model, load_part, save_pretrained
from .config import get_preset
from .trainer import seed_everything


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m multimodal.train", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, help="a config in multimodal/configs/ (lensq-tiny, lensq-smol)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    parser.add_argument("--stages", default="contrastive,generative,align,sentiment")
    parser.add_argument("--vision-from", type=Path, help="copy vision + text towers from this checkpoint")
    parser.add_argument("--init-from", type=Path, help="continue from this checkpoint (e.g. to run a later stage)")
    parser.add_argument("--work-dir", type=Path, default=Path("runs"), help="resume files live here")
    parser.add_argument("--steps-contrastive", type=int, default=1500)
    parser.add_argument("--steps-generative", type=int, default=3000)
    parser.add_argument("--steps-align", type=int, default=300)
    parser.add_argument("--steps-sentiment", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="stage 2 learning rate (default by preset)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--train-vision", action="store_true", help="also fine-tune the vision tower in stage 2")
    parser.add_argument("--token-adapter", action="store_true",
                        help="stage 3: give the sentiment head a token adapter (the lensq-tiny preset has one)")
    parser.add_argument("--sentiment-train-size", type=int, default=3000, help="stage 3 training examples (generated)")
    parser.add_argument("--n-generated", type=int, default=12000, help="generated images per data kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to train (auto: CUDA when there is one); on CUDA in bf16 autocast")
    parser.add_argument("--skip-eval", action="store_true", help="do not run the held-out evaluation at the end")
    return parser.parse_args(argv)


def initial_model(args: argparse.Namespace, corpus: stages.Corpus):
    if args.init_from:
        return load_model(args.init_from, merge_lora=False)
    cfg = get_preset(args.preset)
    model = build_model(cfg, vocabulary=corpus.vocabulary() if cfg.lm.source == "scratch" else None)
    if args.vision_from:
        for part in ("vision_tower", "text_tower"):
            load_part(model, part, load_file(args.vision_from / f"{part}.safetensors"))
        print(f"towers copied from {args.vision_from}")
    return model


def training_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here")
    return torch.device(name)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    started = time.time()
    corpus = stages.Corpus.build(seed=args.seed, n_generated=args.n_generated)
    device = training_device(args.device)
    model = initial_model(args, corpus).to(device)
    print(f"training on {device}" + (" (bf16 autocast)" if device.type == "cuda" else " (float32)"))
    work = args.work_dir / args.out.name
    command = "python -m multimodal.train " + " ".join(sys.argv[1:] if argv is None else argv)
    report: dict = {"command": command, "device": str(device), "stages": {}}
    wanted = args.stages.split(",")
    for stage in ("contrastive", "generative", "align", "sentiment"):
        if stage in wanted:
            report["stages"][stage] = getattr(stages, f"train_{stage}")(model, corpus, args, work / f"{stage}.pt")
            save_pretrained(model, args.out)  # each finished stage is a usable checkpoint
    report["train_seconds"] = round(time.time() - started, 1)
    (args.out / "train_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not args.skip_eval:
        from .evaluate import evaluate_checkpoint

        evaluate_checkpoint(args.out, sentiment=report["stages"].get("sentiment"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
