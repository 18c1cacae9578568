"""``pairuni`` command line: one sub-command per job; each package registers its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from models.registry import FAMILIES, family


def _load_model(args, dtype: str = "float32", device: str = "cpu"):
    """``--model`` of family ``--arch``, checked first (the error names ``--model``)."""
    fam = family(args.arch)
    fam.check_checkpoint(args.model, "--model")
    return fam.load(args.model, dtype, device)


def _model_tiny(args) -> None:
    m = family(args.arch).tiny(args.seed, train_vision_tower=False)
    m.save(args.out)
    n = sum(p.numel() for p in m.module.parameters())
    print(
        f"wrote a tiny random {args.arch} model ({n / 1e6:.2f} M parameters, seed {args.seed}) "
        f"to {args.out}"
    )


def _model_info(args) -> None:
    m = _load_model(args)
    trainable = m.trainable_parameters()
    rows, total, total_train = [], 0, 0
    for label, params in m.components():
        count = sum(p.numel() for p in params.values())
        train = sum(p.numel() for n, p in params.items() if n in trainable)
        total, total_train = total + count, total_train + train
        rows.append(
            (
                label,
                count,
                "yes" if train == count and count else ("no" if train == 0 else "partly"),
            )
        )
    width = max(len(r[0]) for r in rows)
    print(f"{'component':<{width}}  {'parameters':>12}  trainable")
    for label, count, tr in rows:
        print(f"{label:<{width}}  {count:>12,}  {tr}")
    print(f"{'total':<{width}}  {total:>12,}  {total_train:,} trainable")
    print(
        f"image tokens per image: {m.num_image_tokens}; image side: {m.image_size} px; "
        f"vocabulary: {len(m.tokenizer)}; dtype: {m.dtype}"
    )


def _model_sample(args) -> None:
    from PIL import Image

    m = _load_model(args, args.dtype, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    s = m.sample_image_tokens(
        [args.prompt], n=1, cfg_weight=args.cfg_weight, temperature=args.temperature, seed=args.seed
    )
    image = m.decode_images(s.tokens)[0]
    t1 = time.perf_counter()
    Image.fromarray(image).save(out / "image.png")
    answer = m.sample_text(
        image[None],
        [args.question],
        n=1,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        greedy=True,
    )
    t2 = time.perf_counter()
    record = {
        "prompt": args.prompt,
        "question": args.question,
        "answer": answer.texts[0],
        "image_logprob_mean": float(s.logprobs.mean()),
        "answer_tokens": len(answer.token_ids[0]),
        "image_seconds": round(t1 - t0, 3),
        "answer_seconds": round(t2 - t1, 3),
    }
    (out / "answer.json").write_text(json.dumps(record, indent=2))
    print(f"image  -> {out / 'image.png'} ({image.shape[1]}x{image.shape[0]}, {t1 - t0:.2f}s)")
    print(f"answer -> {answer.texts[0]!r} ({t2 - t1:.2f}s; details in {out / 'answer.json'})")


def _model_convert(args) -> None:
    from functools import partial

    from models.convert import convert_checkpoint

    out = convert_checkpoint(args.src, args.out, log=partial(print, flush=True))
    print(f"load it with model.path={out} (or `pairuni model info --model {out}`)")


def _config_keys(args) -> None:
    from deploy.config import RunConfig, describe

    for key, default, doc in describe(RunConfig):
        print(f"{key} = {default!r}\n    {doc}")


def _config_show(args) -> None:
    import yaml

    from deploy.config import RunConfig, load_config, to_dict

    cfg = load_config(RunConfig, args.config, args.overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")


def _train(args) -> int:
    from deploy.train import main as train_main

    argv = [
        "--config",
        args.config,
        *(["--resume", args.resume] if args.resume else []),
        *args.overrides,
    ]
    return train_main(argv)  # 128 + signal when a signal stopped it


def _export(args) -> None:
    from deploy.export import export_checkpoint

    out = export_checkpoint(args.checkpoint, args.out)
    print(f"exported the policy of {args.checkpoint} to {out} (Hugging Face format)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairuni", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    model = sub.add_parser("model", help="tiny checkpoints, model info, sampling").add_subparsers(
        dest="model_command", required=True
    )
    p = model.add_parser("tiny", help="write a tiny random checkpoint of a model family")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default="janus", choices=list(FAMILIES), help="model family")
    p.set_defaults(func=_model_tiny)
    p = model.add_parser("info", help="parameter counts per component, and which train")
    p.add_argument("--model", required=True, help="local checkpoint directory")
    p.add_argument("--arch", default="janus", choices=list(FAMILIES), help="model family")
    p.set_defaults(func=_model_info)
    p = model.add_parser(
        "sample", help="generate an image from a prompt, then answer a question on it"
    )
    p.add_argument("--model", required=True, help="local checkpoint directory")
    p.add_argument("--arch", default="janus", choices=list(FAMILIES), help="model family")
    p.add_argument("--prompt", required=True, help="text prompt for the image")
    p.add_argument("--question", required=True, help="question about the generated image")
    p.add_argument("--out", required=True, help="directory for image.png and answer.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg-weight", type=float, default=5.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_model_sample)
    p = model.add_parser(
        "convert",
        help="convert DeepSeek's original Janus / Janus-Pro checkpoint to transformers' format",
        description="Convert a checkpoint in DeepSeek's original layout (config.json with "
        "model_type 'multi_modality', as on deepseek-ai/Janus-Pro-1B and -7B) into "
        "transformers' Janus format, which pairuni loads: config, tokenizer, processor and "
        "safetensors shards in the stored dtype. Writes to a temporary directory beside --out "
        "and renames it at the end.",
    )
    p.add_argument("--src", required=True, help="original-format checkpoint directory")
    p.add_argument("--out", required=True, help="new (or empty) directory to write")
    p.set_defaults(func=_model_convert)

    config = sub.add_parser("config", help="inspect the run config").add_subparsers(
        dest="config_command", required=True
    )
    p = config.add_parser("keys", help="every config key with its default and meaning")
    p.set_defaults(func=_config_keys)
    p = config.add_parser("show", help="print a resolved config (YAML + overrides)")
    p.add_argument("--config", default=None, help="YAML file")
    p.add_argument("overrides", nargs="*", help="dotted overrides key.sub=value")
    p.set_defaults(func=_config_show)

    p = sub.add_parser("train", help="RL post-training on a local or remote Ray cluster")
    p.add_argument("--config", required=True, help="YAML run config (deploy/configs/)")
    p.add_argument("--resume", default=None, help="checkpoint or run directory to continue")
    p.add_argument("overrides", nargs="*", help="dotted overrides key.sub=value")
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="write a checkpoint's policy as a Hugging Face model dir")
    p.add_argument("--checkpoint", required=True, help="checkpoint dir, or a run dir (latest)")
    p.add_argument("--out", required=True, help="directory to write")
    p.set_defaults(func=_export)

    for register in _package_commands():
        register(sub)
    return parser


def _package_commands():
    """Sub-commands other packages register (each a function taking the sub-parsers)."""
    from deploy.evaluate import add_eval_command
    from deploy.quickstart import add_quickstart_command
    from deploy.serving import add_serve_commands
    from deploy.sft import add_sft_command
    from pairing.augment_cli import add_augment_command
    from pairing.cli import add_pair_command
    from pairing.toyworld import add_toyworld_command

    return [
        add_pair_command,
        add_augment_command,
        add_serve_commands,
        add_toyworld_command,
        add_sft_command,
        add_quickstart_command,
        add_eval_command,
    ]


def main(argv: list[str] | None = None) -> int:
    from models.config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"pairuni: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pairuni config keys | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        return 141  # 128 + SIGPIPE, what a shell reports for a killed writer
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
