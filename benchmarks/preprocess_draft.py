"""Benchmark 5: a 12-megapixel JPEG to model input, JPEG draft decoding vs full decode, at 64 and 336 px."""
from __future__ import annotations

import argparse
import io

from PIL import Image

from benchmarks.figures import median, repeat, table, timed, write_section
from benchmarks.images import twelve_megapixel_jpeg
from multimodal.preprocess import decode_image, fit_to_model, image_to_tensor

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def draft_path(data: bytes, size: int):
    """LensQ's path (Pipeline.prepare, then the tensor): the decoder scales the JPEG down while decoding."""
    return image_to_tensor(fit_to_model(decode_image(data, target_size=size), size), size, CLIP_MEAN, CLIP_STD)


def full_path(data: bytes, size: int):
    """The same preprocessing after a full-size decode."""
    return image_to_tensor(decode_image(data), size, CLIP_MEAN, CLIP_STD)


def open_clip_path(data: bytes, size: int):
    """open_clip's default eval transform on the full-size image, as most code calls it."""
    import open_clip

    transform = open_clip.image_transform(size, is_train=False, mean=CLIP_MEAN, std=CLIP_STD)
    return transform(Image.open(io.BytesIO(data)).convert("RGB"))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true", help="a 1-megapixel JPEG, 2 runs")
    args = parser.parse_args(argv)
    runs = 2 if args.smoke else args.runs
    if args.smoke:
        from benchmarks.images import jpeg_bytes, photo

        data = jpeg_bytes(photo("astronaut").resize((1200, 900)))
    else:
        data = twelve_megapixel_jpeg()
    width, height = Image.open(io.BytesIO(data)).size
    rows, figures = [], {"width": width, "height": height, "bytes": len(data), "runs": runs}
    for size in (64, 336):
        times = {name: median(repeat(lambda: timed(lambda: path(data, size)), runs))
                 for name, path in (("draft", draft_path), ("full", full_path), ("open_clip", open_clip_path))}
        figures[size] = {**times, "ratio_full": times["full"] / times["draft"],
                         "ratio_open_clip": times["open_clip"] / times["draft"]}
        rows.append([f"{size} px", f"{times['draft'] * 1000:.1f} ms", f"{times['full'] * 1000:.1f} ms",
                     f"{times['open_clip'] * 1000:.1f} ms", f"**{times['full'] / times['draft']:.1f}x**",
                     f"{times['open_clip'] / times['draft']:.1f}x"])
    markdown = (f"A {width}x{height} JPEG ({len(data) / 1e6:.1f} MB, a real photo upscaled with grain) to the model's "
                f"input tensor, one thread, median of {runs} runs each, measured side by side. Target: draft ≥ 5x "
                f"faster than full decode.\n\n"
                + table(["model input", "draft decode (LensQ)", "full decode, same resize", "open_clip default",
                         "full / draft", "open_clip / draft"], rows))
    write_section(args.json, "5. Preprocessing: 12-megapixel JPEG to model input", markdown, figures)
    return figures


if __name__ == "__main__":
    main()
