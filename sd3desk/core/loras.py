"""LoRAs: the reference a request carries, the files in the user's LoRA folders, what a file is
for (read from its header, no torch), and A1111's `<lora:name:weight>` prompt tags."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sd3desk.core.errors import FieldError, InvalidParamsError, LoraError, ModelError
from sd3desk.core.files import NotRegularFileError, check_regular, walk
from sd3desk.core.modelhash import LORA_SHORT, lora_hash, read_cache
from sd3desk.core.weights_header import read_safetensors_header

log = logging.getLogger(__name__)

LORA_MAX = 8  # LoRAs in one request
WEIGHT_MIN, WEIGHT_MAX = -10.0, 10.0  # negative weights invert a "slider" LoRA
NAME_MAX = 200
WHOLE_HASH = 64  # hex digits of a SHA-256
SCAN_DEPTH = 4  # subfolders of a LoRA folder looked into (people sort them by style, by model)
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class LoraRef:
    """A LoRA in a request: `name` is the file's name without `.safetensors` (what A1111's
    `<lora:name:weight>` says), `hash` the SHA-256 of its tensors (see modelhash.tensor_sha256;
    64 hex digits once resolved, 12 when read from A1111's "Lora hashes")."""

    name: str
    hash: str
    weight: float = 1.0

    @property
    def short_hash(self) -> str:
        return self.hash[:LORA_SHORT]

    @property
    def resolved(self) -> bool:
        """Named by its whole hash (as queued jobs are), not a short one or none."""
        return len(self.hash) == WHOLE_HASH

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hash": self.hash, "weight": self.weight}

    def tag(self) -> str:
        """A1111's prompt syntax for it."""
        return f"<lora:{self.name}:{self.weight:g}>"


def lora_errors(loras: Any, *, resolved: bool = True) -> list[FieldError]:
    """Problems with a request's LoRAs, each naming the field "loras" and the allowed range;
    `resolved`: hashes must be whole (what a queued job carries)."""
    if not isinstance(loras, tuple) or not all(isinstance(r, LoraRef) for r in loras):
        return [FieldError("loras", "must be a list of LoRAs (name, hash, weight)")]
    errors: list[FieldError] = []
    if len(loras) > LORA_MAX:
        errors.append(FieldError("loras", f"at most {LORA_MAX} at once (got {len(loras)})"))
    seen: set[str] = set()
    for ref in loras:
        name = ref.name if isinstance(ref.name, str) else ""
        if not name or len(name) > NAME_MAX or any(c in name for c in "<>:\n\r\t"):
            errors.append(
                FieldError(
                    "loras",
                    f"name {ref.name!r} must be 1-{NAME_MAX} characters without < > : or "
                    "line breaks",
                )
            )
        weight = ref.weight
        if (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float))
            or not math.isfinite(weight)
            or not WEIGHT_MIN <= weight <= WEIGHT_MAX
        ):
            errors.append(
                FieldError(
                    "loras",
                    f"{name}: weight must be between {WEIGHT_MIN:g} and {WEIGHT_MAX:g} "
                    f"(got {weight!r})",
                )
            )
        digest = ref.hash if isinstance(ref.hash, str) else ""
        whole = len(digest) == WHOLE_HASH and _HEX.fullmatch(digest)
        if resolved and not whole:
            errors.append(
                FieldError("loras", f"{name}: hash must be the file's SHA-256 (64 hex digits)")
            )
        elif digest and not (whole or (len(digest) >= 8 and _HEX.fullmatch(digest))):
            errors.append(FieldError("loras", f"{name}: hash {digest!r} is not hexadecimal"))
        if digest and digest in seen:
            errors.append(FieldError("loras", f"{name} is listed twice"))
        seen.add(digest)
    return errors


def loras_from_list(value: Any) -> tuple[LoraRef, ...]:
    """LoRAs from a record's list of {"name", "hash", "weight"}; ValueError when malformed."""
    if not isinstance(value, list) or len(value) > LORA_MAX * 4:
        raise ValueError("is not a list of LoRAs")
    refs = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ValueError("is not a list of LoRAs")
        name, digest, weight = entry.get("name"), entry.get("hash", ""), entry.get("weight", 1.0)
        if not isinstance(name, str) or not isinstance(digest, str):
            raise ValueError("holds a LoRA without a name")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ValueError(f"gives {name} a weight that is not a number")
        refs.append(LoraRef(name, digest.lower(), float(weight)))
    return tuple(refs)


# ------------------------------------------------------------------ A1111's prompt tags

# A1111's extra networks syntax (modules/extra_networks.py): <lora:NAME:ARG:ARG...>, where the
# arguments are the weights (one for everything, or text encoder then the MMDiT/UNet) or te=,
# unet=. LyCORIS' older extension wrote <lyco:...>, which A1111's Lora extension also reads.
_TAG = re.compile(r"<(lora|lyco):([^<>:]+)((?::[^<>:]*)*)>", re.IGNORECASE)


@dataclass(frozen=True)
class PromptLoras:
    """A prompt with its LoRA tags taken out."""

    prompt: str
    loras: tuple[tuple[str, float], ...]  # (name, weight) in prompt order
    notes: tuple[str, ...] = ()


def split_lora_tags(prompt: str) -> PromptLoras:
    """Take `<lora:name:weight>` tags out of `prompt` (the rest of it kept as written)."""
    found: list[tuple[str, float]] = []
    notes: list[str] = []

    def take(match: re.Match[str]) -> str:
        name = match.group(2).strip()
        args = [a.strip() for a in match.group(3).split(":")[1:]]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        plain = [a for a in args if "=" not in a and a]
        te = named.get("te", plain[0] if plain else "1")
        unet = named.get("unet", plain[1] if len(plain) > 1 else te)
        try:
            weight, te_weight = float(unet), float(te)
        except ValueError:
            notes.append(f"the LoRA tag {match.group(0)!r} has a weight that is not a number")
            return match.group(0)
        if te_weight != weight:
            notes.append(
                f"{name}: one weight applies to the whole LoRA here; the MMDiT's ({weight:g}) "
                f"was used, not the text encoders' ({te_weight:g})"
            )
        found.append((name, weight))
        return ""

    text = _TAG.sub(take, prompt)
    if found:  # the spaces and commas a tag leaves behind
        text = re.sub(r"[ \t]{2,}", " ", text)
        text = re.sub(r"[ \t]*,([ \t]*,)*", ",", text).strip(" ,\t")
    return PromptLoras(text, tuple(found), tuple(notes))


def lora_hashes_text(loras: Iterable[LoraRef]) -> str:
    """A1111's "Lora hashes" value: "name: 12 hex, name: 12 hex"."""
    # (A1111 takes commas and colons out of the names it writes there, and so do we)
    return ", ".join(
        f"{ref.name.replace(',', '').replace(':', '')}: {ref.short_hash}" for ref in loras
    )


def parse_lora_hashes(text: str) -> dict[str, str]:
    """name -> short hash from A1111's "Lora hashes" value."""
    hashes: dict[str, str] = {}
    for part in text.split(","):
        name, sep, digest = part.rpartition(":")
        digest = digest.strip().lower()
        if sep and name.strip() and _HEX.fullmatch(digest):
            hashes[name.strip()] = digest
    return hashes


# ------------------------------------------------------------------ what a file is


class LoraKind(Enum):
    """The architecture a LoRA file was trained for."""

    sd3 = "SD3 / SD3.5"
    sdxl = "SDXL"
    sd1 = "Stable Diffusion 1.x/2.x"
    flux = "Flux"
    unknown = "an unknown model"


# The MMDiT's width tells SD3 Medium and SD3.5 Medium (1536) from SD3.5 Large (2432).
WIDTH_FAMILIES = {1536: "SD3 Medium / SD3.5 Medium", 2432: "SD3.5 Large"}


@dataclass(frozen=True)
class LoraInfo:
    """A LoRA file as its header describes it."""

    path: Path
    kind: LoraKind
    layout: str  # "kohya" (lora_unet_…), "comfyui" (diffusion_model.…), "diffusers"
    parts: frozenset[str]  # "transformer", "text_encoder", "text_encoder_2", "text_encoder_3"
    width: int = 0  # the MMDiT width it adapts (0: unknown)
    rank: int = 0
    size_bytes: int = 0

    @property
    def name(self) -> str:
        return self.path.stem

    def describe(self) -> str:
        """One line for lists: what it is for and what it changes."""
        if self.kind is not LoraKind.sd3:
            return f"for {self.kind.value}: sd3desk cannot use it"
        family = WIDTH_FAMILIES.get(self.width, "SD3")
        parts = [_PART_NAMES[p] for p in _PART_NAMES if p in self.parts]
        rank = f", rank {self.rank}" if self.rank else ""
        return f"{family} LoRA ({' + '.join(parts)}{rank})"


_PART_NAMES = {
    "transformer": "MMDiT",
    "text_encoder": "CLIP-L",
    "text_encoder_2": "CLIP-G",
    "text_encoder_3": "T5",
}
# the text encoders' prefixes in each layout: kohya's lora_te1/2/3_, diffusers' names
_KOHYA_ENCODERS = {"lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2"}
_KOHYA_ENCODERS["lora_te3_"] = "text_encoder_3"


def lora_kind(keys: Sequence[str]) -> tuple[LoraKind, str]:
    """What a LoRA's tensor names say it is for, and in which layout they are."""
    text = "\n".join(keys)

    def has(*parts: str) -> bool:
        return any(p in text for p in parts)

    if has("double_blocks", "single_blocks", "single_transformer_blocks"):
        return LoraKind.flux, ""
    if has(
        "input_blocks", "output_blocks", "middle_block", "down_blocks", "up_blocks", "mid_block"
    ):
        sdxl = has("lora_te2_", "text_encoder_2.", "lora_unet_input_blocks_4_1_transformer_blocks_")
        return (LoraKind.sdxl if sdxl else LoraKind.sd1), ""
    if has("lora_unet_joint_blocks_", "lora_unet_context_embedder", "lora_unet_final_layer"):
        return LoraKind.sd3, "kohya"
    if has("joint_blocks."):
        return LoraKind.sd3, "comfyui"
    if has("transformer_blocks.") and has(".attn.to_q.", ".attn.add_q_proj.", ".ff_context."):
        return LoraKind.sd3, "diffusers"
    if has("lora_te1_", "lora_te2_", "lora_te3_") or (
        has("text_encoder.", "text_encoder_2.") and not has("unet.", "transformer.")
    ):
        return LoraKind.sd3, "kohya" if has("lora_te") else "diffusers"  # text encoders only
    return LoraKind.unknown, ""


def _parts(keys: Sequence[str], layout: str) -> frozenset[str]:
    parts = set()
    for key in keys:
        for prefix, part in _KOHYA_ENCODERS.items():
            if key.startswith(prefix):
                parts.add(part)
        if layout == "diffusers":
            head = key.split(".", 1)[0]
            if head in ("text_encoder", "text_encoder_2", "text_encoder_3"):
                parts.add(head)
        if "joint_blocks" in key or "transformer_blocks" in key or key.startswith("lora_unet_"):
            parts.add("transformer")
    return frozenset(parts)


def _down_shape(header: dict[str, Any], keys: Sequence[str]) -> tuple[int, int]:
    """(rank, width) from the first attention qkv/q projection's down (A) matrix."""
    for key in keys:
        if ("x_block_attn_qkv" in key or "x_block.attn.qkv" in key or ".attn.to_q." in key) and (
            "lora_down" in key or "lora_A" in key or "lora.down" in key
        ):
            shape = header[key].get("shape") or []
            if len(shape) == 2:
                return int(shape[0]), int(shape[1])
    return 0, 0


def inspect_lora(path: Path) -> LoraInfo:
    """A LoRA file's kind, layout, parts and rank from its header; LoraError when it is not a
    safetensors file (pickle formats are refused: opening them can run code) or is damaged."""
    if path.suffix.lower() != ".safetensors":
        raise LoraError(
            f"{path.name} is not a .safetensors file; LoRAs are read from .safetensors only "
            "(pickle formats such as .ckpt and .pt can run code when opened)",
            "download the .safetensors version of the LoRA",
            path=str(path),
        )
    try:
        header = read_safetensors_header(path)
    except ModelError as exc:
        raise LoraError(exc.message, exc.advice, path=exc.path) from exc
    header.pop("__metadata__", None)
    keys = sorted(header)
    kind, layout = lora_kind(keys)
    rank, width = _down_shape(header, keys) if kind is LoraKind.sd3 else (0, 0)
    return LoraInfo(
        path,
        kind,
        layout,
        _parts(keys, layout) if kind is LoraKind.sd3 else frozenset(),
        width,
        rank,
        path.stat().st_size,
    )


def require_sd3(path: Path) -> LoraInfo:
    """`path`'s description when it is an SD3 LoRA; LoraError saying what it is for instead."""
    info = inspect_lora(path)
    if info.kind is not LoraKind.sd3:
        raise LoraError(
            f"{path.name} is a LoRA for {info.kind.value}, not for SD3: it cannot change an "
            "SD3 model",
            "use a LoRA made for SD3 / SD3.5 (on Civitai: base model SD 3 or SD 3.5)",
            path=str(path),
        )
    return info


# ------------------------------------------------------------------ the user's LoRA folders


class LoraNotFoundError(LoraError):
    """A request names a LoRA that no LoRA folder holds (any more)."""


class LoraLibrary:
    """The LoRA files in the user's folders, found by name or by hash.

    Thread rule: any thread; it only reads the disk and writes the hash cache atomically.
    """

    def __init__(self, folders: Sequence[Path], cache_file: Path | None = None) -> None:
        self.folders = tuple(Path(f) for f in folders)
        self.cache_file = cache_file

    def files(self) -> list[Path]:
        """Every .safetensors file in the folders (and their subfolders, a few levels deep)."""
        found: dict[Path, None] = {}
        for folder in self.folders:
            for entry in walk(folder, (".safetensors",), SCAN_DEPTH):
                found.setdefault(Path(entry.path), None)
        return sorted(found, key=lambda p: (p.stem.lower(), str(p)))

    def scan(self) -> list[LoraInfo]:
        """What each file is (headers only; a damaged file is left out and logged)."""
        infos = []
        for path in self.files():
            try:
                infos.append(inspect_lora(path))
            except ModelError as exc:
                log.info("LoRA %s skipped: %s", path, exc.message)
        return infos

    def hash(self, path: Path) -> str:
        return lora_hash(path, self.cache_file)

    def ref(self, path: Path, weight: float = 1.0) -> LoraRef:
        """The reference to `path` a request carries (hashing it once; cached)."""
        try:
            check_regular(path)
            return LoraRef(path.stem, self.hash(path), weight)
        except NotRegularFileError as exc:
            raise ModelError(f"{exc.strerror}, not a LoRA file", path=str(path)) from exc
        except OSError as exc:
            raise ModelError(
                f"the LoRA {path} cannot be read: {exc.strerror or exc}", path=str(path)
            ) from exc

    def find(self, ref: LoraRef) -> Path:
        """The file `ref` names: its hash (or the hash's start) must match; found by name
        first, then among files hashed before, then by hashing the rest."""
        for path in self._candidates(ref):
            try:
                if self.hash(path).startswith(ref.hash.lower()):
                    return path
            except OSError:
                continue
        where = ", ".join(str(f) for f in self.folders) or "no LoRA folder is set"
        hashed = f" with hash {ref.short_hash}" if ref.hash else ""
        raise LoraNotFoundError(
            f"the LoRA {ref.name!r}{hashed} is not in your LoRA folders ({where})",
            "put the file into a LoRA folder (File → Settings), or take the LoRA out of the job",
            path=ref.name,
        )

    def resolve(self, refs: Iterable[LoraRef]) -> tuple[LoraRef, ...]:
        """`refs` with whole hashes (a short hash or none, as read from another tool's image,
        becomes the matching file's), each checked to be an SD3 LoRA; LoraNotFoundError or
        LoraError names the first that is not."""
        resolved = []
        for ref in refs:
            path = self.find(ref)
            require_sd3(path)
            whole = ref if ref.resolved else LoraRef(path.stem, self.hash(path), ref.weight)
            resolved.append(whole)
        return tuple(resolved)

    def resolve_request(self, refs: Iterable[LoraRef]) -> tuple[LoraRef, ...]:
        """`resolve`, for a request from a front door: what is wrong is an InvalidParamsError
        under the field "loras" (a LoRA not found, for another model, or gone while read)."""
        try:
            return self.resolve(refs)
        except LoraError as exc:
            raise InvalidParamsError([FieldError("loras", exc.message)]) from exc
        except OSError as exc:  # a file that went away while it was hashed
            message = f"a LoRA file cannot be read: {exc.strerror or exc}"
            raise InvalidParamsError([FieldError("loras", message)]) from exc

    def _candidates(self, ref: LoraRef) -> Iterable[Path]:
        files = self.files()
        named = [p for p in files if p.stem == ref.name]
        yield from named
        if not ref.hash:
            return
        hashed = read_cache(self.cache_file)
        known = [
            Path(key)
            for key, entry in hashed.items()
            if isinstance(entry, dict)
            and str(entry.get("tensors", "")).startswith(ref.hash.lower())
        ]
        yield from (p for p in known if p not in named and p.is_file())
        yield from (p for p in files if p not in named and p not in known)


def parse_lora_spec(text: str) -> tuple[str, float]:
    """`FILE[:WEIGHT]` (the CLI's --lora): the file or name and the weight (1 when left out;
    a Windows path's drive colon is not a weight)."""
    head, sep, tail = text.rpartition(":")
    if sep and head and not ("\\" in tail or "/" in tail):
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0
