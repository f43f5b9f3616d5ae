"""`gte encode`: embed texts and print their cosine similarities, with the torch model or an export's ONNX graph.

CPU example:  gte encode "A man plays guitar." "Someone plays an instrument." "The market fell."
              gte encode --model runs/minilm-export --backend onnx-int8 "a text" "another"
"""

from __future__ import annotations

import argparse

from gte_model.core.errors import UserError
from gte_model.load import DEFAULT_MODEL, load_model
from gte_model.onnx_export import BACKENDS, load_onnx

DEMO_TEXTS = [
    "A man is playing a guitar.",
    "Someone is playing a musical instrument.",
    "The stock market fell sharply after the announcement.",
    "Share prices dropped today.",
]


def encode_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gte encode", description="Embed texts and print cosine similarities.")
    parser.add_argument("texts", nargs="*", help="texts to embed (default: four demo sentences)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="preset, packaged short name or folder")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with bf16 units)")
    parser.add_argument("--backend", choices=["torch", *BACKENDS], default="torch",
                        help="torch (default), or the export's ONNX graph through onnxruntime: onnx (fp32), onnx-int8")
    parser.add_argument("--prompt-name", default=None, metavar="NAME",
                        help="prepend the model's prompt NAME: query, document, or a training source's (data.prompts)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own code (config.json auto_map); read it first")
    args = parser.parse_args(argv)
    texts = args.texts or DEMO_TEXTS
    check_utf8(texts, "TEXT")  # before the slow load
    if args.backend != "torch" and args.bf16:
        raise UserError(f"--bf16: applies to --backend torch only, not {args.backend}; drop --bf16")
    if args.backend == "torch":
        model = load_model(args.model, trust_remote_code=args.trust_remote_code, trust_flag="--trust-remote-code")
    else:
        model = load_onnx(args.model, BACKENDS[args.backend])
    if args.prompt_name is not None and args.prompt_name not in model.prompts:
        raise UserError(f"--prompt-name {args.prompt_name}: the model has no such prompt; it has "
                        f"{sorted(model.prompts) or 'none'}; pick one of them or leave --prompt-name out")
    emb = model.encode(texts, bf16=args.bf16, normalize=True, prompt_name=args.prompt_name)
    sims = emb @ emb.T
    print(f"model: {model.base_model}  dim={model.dim}  pooling={model.pooling}  max_seq_len={model.max_seq_len}"
          f"  backend={args.backend}")
    width = max(len(t[:50]) for t in texts)
    for i, t in enumerate(texts):
        row = " ".join(f"{s:6.3f}" for s in sims[i])
        print(f"{t[:50]:<{width}}  {row}")
    return 0


def check_utf8(texts: list[str], what: str) -> None:
    """Refuse an argument that was not valid UTF-8: Python hands its bytes over as lone surrogates (\\udcXX), which
    no tokenizer encodes."""
    for i, text in enumerate(texts, start=1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            byte = ord(text[exc.start]) - 0xDC00 if 0xDC80 <= ord(text[exc.start]) <= 0xDCFF else None
            raw = f"byte 0x{byte:02x}" if byte is not None else f"code point U+{ord(text[exc.start]):04X}"
            raise UserError(f"{what} {i}: not valid UTF-8 ({raw} at character {exc.start}); pass the text in UTF-8 "
                            "(check the terminal's or the file's encoding, e.g. iconv -t UTF-8)") from None
