"""Build a Hugging Face tokenizer directory that mirrors the simulator's tokenizer, offline.

inference-perf needs a tokenizer loadable with ``AutoTokenizer.from_pretrained(local_dir)``: it
samples random token ids, decodes them into prompts of an exact token length, and counts output
tokens by re-encoding the streamed text. The simulator (``inferplane.sim.tokenizer``) has no
files, so this script writes a ``tokenizer.json`` with the same pieces and the same
pre-tokenizer regex; HF's WordPiece model (empty continuation prefix) does the same greedy
longest-match the simulator does for words outside its vocabulary. Token ids differ from the
simulator's (only printable pieces are kept), token *counts* agree, which is what matters: a
prompt of N tokens for inference-perf is ~N tokens for the simulated KV cache, and output tok/s is
counted in simulator tokens.

Run with the bench venv's Python (it has ``tokenizers`` and ``transformers``)::

    bench/.work/perf/bin/python bench/routing/make_tokenizer.py OUT_DIR
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_sim_tokenizer_module():
    # Load the module file directly: the bench venv does not have inferplane installed, and the
    # tokenizer module needs only the standard library.
    path = REPO / "src" / "inferplane" / "sim" / "tokenizer.py"
    spec = importlib.util.spec_from_file_location("_sim_tokenizer", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["_sim_tokenizer"] = module
    spec.loader.exec_module(module)
    return module


def build(out_dir: Path, chat_template: str = "llama3") -> Path:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
    )

    sim = load_sim_tokenizer_module()
    tok = sim.Tokenizer(chat_template)
    # The piece table: ids -> bytes (the attribute moved between versions of the simulator).
    pieces = getattr(tok, "_pieces", None)
    if pieces is None:
        pieces = tok.byte_table() if hasattr(tok, "byte_table") else [tok.token_bytes(i) for i in range(tok.vocab_size)]
    vocab: dict[str, int] = {"[UNK]": 0}
    for token_id in range(tok.vocab_size):
        if tok.is_special(token_id):
            continue
        raw = pieces[token_id]
        try:
            piece = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # lone UTF-8 bytes >= 0x80 cannot be a text piece
        if len(piece) == 1 and (ord(piece) < 32 and piece not in "\n\t") or piece == "\x7f":
            continue  # control characters: keep them out of generated prompts
        vocab.setdefault(piece, len(vocab))
    model = models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="", max_input_chars_per_word=10_000)
    hf = Tokenizer(model)
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(sim._WORD_PATTERN.pattern), behavior="isolated")
    hf.decoder = decoders.Fuse()
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in sim.SPECIAL_TOKENS])
    out_dir.mkdir(parents=True, exist_ok=True)
    hf.save(str(out_dir / "tokenizer.json"))
    bos = "<|begin_of_text|>" if chat_template == "llama3" else None
    eos = "<|eot_id|>" if chat_template == "llama3" else "<|im_end|>"
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 131072,
        "unk_token": "[UNK]",
        "eos_token": eos,
        "bos_token": bos,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps({"unk_token": "[UNK]", "eos_token": eos}))
    return out_dir


def check(out_dir: Path) -> None:
    """Compare token counts with the simulator's on generated and English text."""
    import random

    from transformers import AutoTokenizer

    sim = load_sim_tokenizer_module().Tokenizer("llama3")
    hf = AutoTokenizer.from_pretrained(str(out_dir))
    rng = random.Random(0)
    ids = [i for i in range(hf.vocab_size) if i not in set(hf.all_special_ids)]
    worst = 0.0
    for _ in range(20):
        text = hf.decode([rng.choice(ids) for _ in range(500)], skip_special_tokens=True)
        n_hf = len(hf(text, add_special_tokens=False).input_ids)
        n_sim = len(sim.encode(text, add_special_tokens=False))
        worst = max(worst, abs(n_hf - n_sim) / n_sim)
    english = "The quick brown fox jumps over the lazy dog, because routing requests well matters. " * 20
    n_hf = len(hf(english, add_special_tokens=False).input_ids)
    n_sim = len(sim.encode(english, add_special_tokens=False))
    print(f"vocab {hf.vocab_size}; random text: worst count difference {worst:.2%}; "
          f"English: hf {n_hf} vs sim {n_sim}; chars/token {len(text) / len(hf(text).input_ids):.2f}")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "bench" / ".work" / "sim-tokenizer")
    build(target)
    check(target)
