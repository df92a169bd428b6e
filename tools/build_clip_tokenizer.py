"""Build Hugging Face CLIP tokenizer files (vocab.json, merges.txt) from a BPE merges list.

Usage:
    python tools/build_clip_tokenizer.py BPE_GZ OUT_DIR

BPE_GZ is the gzip-compressed merges list ``bpe_simple_vocab_16e6.txt.gz``.
OUT_DIR receives ``vocab.json`` and ``merges.txt`` in the layout read by
``transformers.CLIPTokenizer``. The output is deterministic: the same input
always gives byte-identical files.
"""

# Source of the data file: ``open_clip/bpe_simple_vocab_16e6.txt.gz`` from the
# PyPI wheel ``open_clip_torch`` (MIT licence; the file itself is the one that
# OpenAI released with CLIP). Only the data file is used; this script is our own.
#
# Construction rule (the one used by OpenAI CLIP's SimpleTokenizer):
#   * skip the header line of the merges file, then keep the next
#     49152 - 256 - 2 = 48894 merge lines;
#   * the vocabulary, in id order, is
#       - the 256 byte-level characters (GPT-2 byte-to-unicode table order),
#       - the same 256 characters each followed by "</w>",
#       - for every kept merge "a b", the joined token "ab",
#       - "<|startoftext|>" and "<|endoftext|>";
#     which gives 256 + 256 + 48894 + 2 = 49408 entries;
#   * merges.txt is a "#version: 0.2" line followed by the kept merges.

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2  # 48894
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"


def byte_alphabet() -> list[str]:
    """Return the 256 printable stand-ins for the bytes 0..255, in GPT-2 table order.

    Bytes that are already visible Latin-1 characters keep their own code point
    and come first (in byte order); every other byte is mapped, in byte order,
    onto code points 256, 257, ... and appended after them.
    """
    visible = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\u00a1"), ord("\u00ac") + 1),
        *range(ord("\u00ae"), ord("\u00ff") + 1),
    ]
    visible_set = set(visible)
    chars = [chr(b) for b in visible]
    extra = 0
    for b in range(256):
        if b not in visible_set:
            chars.append(chr(256 + extra))
            extra += 1
    assert len(chars) == 256 and len(set(chars)) == 256
    return chars


def read_merges(gz_path: Path, count: int = NUM_MERGES) -> list[tuple[str, str]]:
    """Read ``count`` merge pairs from the gzip file, skipping its header line."""
    with gzip.open(gz_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    body = lines[1 : 1 + count]
    if len(body) != count:
        raise ValueError(f"{gz_path}: expected {count} merges, found {len(body)}")
    pairs = []
    for number, line in enumerate(body, start=2):
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"{gz_path}:{number}: not a merge pair: {line!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Return token -> id following the construction rule described above."""
    alphabet = byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    tokens += [a + b for a, b in merges]
    tokens += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in the constructed vocabulary")
    return vocab


def write_files(vocab: dict[str, int], merges: list[tuple[str, str]], out_dir: Path) -> None:
    """Write vocab.json (ordered by id, UTF-8, no ASCII escaping) and merges.txt."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = dict(sorted(vocab.items(), key=lambda item: item[1]))
    text = json.dumps(ordered, ensure_ascii=False, indent=2) + "\n"
    (out_dir / "vocab.json").write_bytes(text.encode("utf-8"))
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (out_dir / "merges.txt").write_bytes(merges_text.encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bpe_gz", type=Path, help="path to bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("out_dir", type=Path, help="directory for vocab.json and merges.txt")
    args = parser.parse_args(argv)

    merges = read_merges(args.bpe_gz)
    vocab = build_vocab(merges)
    write_files(vocab, merges, args.out_dir)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
