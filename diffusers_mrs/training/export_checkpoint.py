"""``python -m diffusers_mrs.training.export_checkpoint CHECKPOINT_DIR OUT_DIR``: a
pickle-free copy (safetensors + JSON) of a training checkpoint folder
(:func:`.checkpoint.export_checkpoint`), which resumes on any machine."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from .checkpoint import export_checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffusers_mrs.training.export_checkpoint CHECKPOINT_DIR OUT_DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m diffusers_mrs.training.export_checkpoint",
        description="Write a copy of a training checkpoint folder that holds only safetensors"
        " and JSON (no pickle), e.g. a running job's latest checkpoint, to commit or move to"
        " another machine; the checkpoint folder is only read.")
    parser.add_argument("checkpoint_dir", type=Path, help="a checkpoint folder")
    parser.add_argument("out_dir", type=Path, help="a new (or empty) folder for the copy")
    args = parser.parse_args(argv)
    if not args.checkpoint_dir.is_dir():
        parser.error(f"{args.checkpoint_dir} is not a folder")
    try:
        files = export_checkpoint(args.checkpoint_dir, args.out_dir)
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    size = sum(p.stat().st_size for p in files)
    print(f"wrote {len(files)} files ({size / 1e6:.1f} MB) to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
