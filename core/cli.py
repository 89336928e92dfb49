"""``mstt-stvsr`` / ``python -m mstt_stvsr.core``: one entry point, subcommands loaded lazily.

Each subcommand lives in the module named after what it does and exposes
``add_arguments(parser)`` and ``main(args) -> int``; only the chosen one is imported, so
``mstt-stvsr --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS = {
    "info": (".cli", "print versions, devices and the deformable-conv backend"),
    "run": (".run.command", "super-resolve a stack of georeferenced frames (N in, 2N-1 out, x4)"),
    "batch": (".run.batch", "super-resolve many stacks (folders or a manifest), locally or on a Dask cluster"),
    "train": (".training.train", "train MSTT weights"),
    "eval": (".training.evaluate", "PSNR/SSIM of a model against the bicubic + linear-blend baseline"),
    "finetune": (".training.finetune", "fine-tune the network on your own video (native frames as ground truth)"),
    "synth": (".training.synth", "make synthetic satellite-video clips or the sample stack"),
    "bench": (".bench.command", "throughput and end-to-end benchmark"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print as JSON")
    parser.add_argument("--weights", metavar="FILE",
                        help="describe this weights file instead: network, training, fine-tune record")


def main_info(args) -> int:
    import json

    info = weights_info(args.weights) if args.weights else collect_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "finetune":
            from .training.finetune import describe

            for label, text in describe(value):
                print(f"{label:>22}: {text}")
        else:
            print(f"{key:>22}: {value}")
    return 0


def weights_info(path) -> dict:
    """What a weights file says about itself: network, training facts, and, for a fine-tuned
    copy, its record under "finetune" (sources, scores before and after, which was kept)."""
    import json
    from pathlib import Path

    from .errors import WeightsError
    from .net.weights import load_model, read_metadata
    from .training.finetune import META_KEY

    model = load_model(path)  # a WeightsError names what is wrong with the file
    info = {"weights": str(Path(path)), "variant": model.variant, "config": json.dumps(model.config)}
    if Path(path).suffix.lower() == ".safetensors":
        meta = read_metadata(path)
        for key in ("trained_steps", "train_data", "crop_lr", "batch", "lr", "last_run"):
            if key in meta:
                info[key] = meta[key]
        if META_KEY in meta:
            try:
                info[META_KEY] = json.loads(meta[META_KEY])
            except ValueError:
                raise WeightsError(f"{path}: corrupt {META_KEY} metadata") from None
    return info


def collect_info() -> dict:
    """Versions, devices and backends: what a bug report needs."""
    import platform

    info = {"python": platform.python_version()}
    try:
        from importlib.metadata import version

        info["mstt_stvsr"] = version("mstt_stvsr")
    except Exception:  # not installed, running from a plugin folder
        info["mstt_stvsr"] = "(not installed)"
    for name in ("torch", "numpy", "rasterio", "cv2", "safetensors", "torchvision"):
        try:
            mod = importlib.import_module(name)
            info[name] = getattr(mod, "__version__", "?")
        except Exception:
            info[name] = "not installed"
    try:
        from osgeo import gdal

        info["gdal"] = gdal.__version__
    except Exception:
        info["gdal"] = "not installed"
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        devices = ["cpu"]
        if torch.cuda.is_available():
            devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        info["devices"] = ", ".join(devices)
        from .net.dcn import deform_conv_backend

        info["deform_conv_backend"] = deform_conv_backend()
    except Exception as exc:
        info["devices"] = f"unavailable ({exc})"
    try:
        from .net.weights import default_weights_path

        path = default_weights_path()
        info["default_weights"] = f"{path}" + ("" if path.exists() else " (missing)")
        if path.exists():
            from .net.weights import read_metadata

            meta = read_metadata(path)
            info["default_weights_variant"] = meta.get("variant", "mstt_stvsr (with base)")
    except Exception as exc:
        info["default_weights"] = f"unavailable ({exc})"
    return info


def build_parser(argv) -> argparse.ArgumentParser:
    """Parser whose chosen subcommand (the first of ``argv`` that names one) has full arguments."""
    parser = argparse.ArgumentParser(
        prog="mstt-stvsr",
        description="Space-time super-resolution of georeferenced satellite video (MSTT).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module, _name=name)
        if name == chosen:
            mod = sys.modules[__name__] if module == ".cli" else importlib.import_module(module, __package__)
            mod.add_arguments(p)
    return parser


def main(argv=None) -> int:
    from .errors import Interrupted, MsttError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        if args._module == ".cli":
            return main_info(args)
        mod = importlib.import_module(args._module, __package__)
        return int(mod.main(args) or 0)
    except Interrupted as exc:  # temporary files are gone; the shell's convention for a signal
        print(f"mstt-stvsr {args._name}: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except MsttError as exc:
        print(f"mstt-stvsr {args._name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mstt-stvsr {args._name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
