"""Load and save DiffusionLM checkpoints in each family's Hugging Face layout (docs/design.md §4).

A checkpoint is a local directory: `config.json`, `model.safetensors` or
`model.safetensors.index.json` plus its shards, and optionally tokenizer files. Nothing is
downloaded and no remote code runs: config keys and tensor names map through models/layouts.py.

Token ids (mask/eos/pad) are resolved per id, first source wins: `overrides`, config.json, the
tokenizer in the same directory, the family's released mask id (mask only, if it fits the
vocabulary), eos (pad only). Anything still missing is an error.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import split_torch_state_dict_into_shards
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .anyres import expand_pinpoints
from .config import VISION_FAMILIES, ModelConfig
from .layouts import FAMILY_LAYOUTS, KNOWN_MASK_IDS, MODEL_TYPES, Layout
from .tokenizer import load_tokenizer
from .transformer import DiffusionLM
from .vision import build_model, vision_dict

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
TOKEN_IDS = ("mask_token_id", "eos_token_id", "pad_token_id")
OVERRIDABLE = (*TOKEN_IDS, "stop_token_ids", "block_size")
# mm_patch_merge_type of one square view (False) and of anyres views (True).
MERGE_TYPES = {False: "flat", True: "spatial_unpad"}
# Shape fields a config.json must give (the rest have ModelConfig defaults or are derived).
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads")
# Fields that size the model: positive integers (a 0 or a float fails deep in the build otherwise).
SIZES = (*REQUIRED, "num_kv_heads", "head_dim", "max_position_embeddings", "block_size")


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               family: str | None = None, overrides: dict[str, Any] | None = None) -> DiffusionLM:
    """Build a DiffusionLM from a local checkpoint directory.

    family: force a family instead of detecting it from `model_type` (e.g. a qwen2 config as dream).
    overrides: any of OVERRIDABLE; they win over config.json and tokenizer.
    """
    path = Path(path)
    cfg = load_config(path, family=family, overrides=overrides)
    return _build(cfg, _read_tensors(path, dtype, device), path, device)


def load_config(path: str | Path, *, family: str | None = None, overrides: dict[str, Any] | None = None) -> ModelConfig:
    """The ModelConfig load_model would build (token ids resolved), without reading the weights."""
    path = Path(path)
    raw = _read_json(path / CONFIG)
    family = family or detect_family(raw, path)
    if family not in FAMILY_LAYOUTS:
        raise ValueError(f"family={family!r}: allowed values are {sorted(FAMILY_LAYOUTS)}")
    return config_from_hf(raw, family, path, overrides or {})


def save_model(model: DiffusionLM, path: str | Path, tokenizer: Any = None, *,
               max_shard_size: int | str = "5GB", extra_config: dict[str, Any] | None = None) -> Path:
    """Write config.json, safetensors weights (sharded above `max_shard_size`) and the tokenizer.

    extra_config: keys kept in config.json under ours (e.g. the source checkpoint's `auto_map`,
    so the export still loads in the reference engines' remote code).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    layout = FAMILY_LAYOUTS[cfg.family]
    dtype = model.embed_tokens.weight.dtype
    dtype_name = str(dtype).removeprefix("torch.")  # transformers<5 reads torch_dtype, >=5 dtype
    config = {**(extra_config or {}), **config_to_hf(cfg, path), "torch_dtype": dtype_name, "dtype": dtype_name}
    state = {layout.tensor_name(name): t for name, t in model.state_dict().items()
             if not (cfg.tie_word_embeddings and name == "lm_head.weight")}
    _write_tensors(path, state, max_shard_size)
    (path / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path


def detect_family(raw: dict[str, Any], path: Path) -> str:
    if "dllm_family" in raw:  # written by save_model: the layout alone does not say "tiny"
        if raw["dllm_family"] not in FAMILY_LAYOUTS:
            raise ValueError(f"{path / CONFIG}: dllm_family={raw['dllm_family']!r} is not supported; allowed values "
                             f"are {sorted(FAMILY_LAYOUTS)}")
        return raw["dllm_family"]
    model_type = raw.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"{path / CONFIG}: model_type={model_type!r} is not supported; allowed values are "
                         f"{sorted(MODEL_TYPES)} (or pass family= one of {sorted(FAMILY_LAYOUTS)})")
    return MODEL_TYPES[model_type]


def config_from_hf(raw: dict[str, Any], family: str, path: Path, overrides: dict[str, Any]) -> ModelConfig:
    """ModelConfig from a config.json dict in `family`'s layout (tokenizer in `path` fills ids)."""
    layout = FAMILY_LAYOUTS[family]
    _check_fixed(raw, layout, path)
    values: dict[str, Any] = {}
    for name, keys in layout.keys.items():
        present = [raw[k] for k in keys if raw.get(k) is not None]
        if present:
            values[name] = present[0]
    for name in SIZES:
        if name in values and not (type(values[name]) is int and values[name] >= 1):  # bool is an int subclass
            raise ValueError(f"{path / CONFIG}: {' or '.join(layout.keys[name])}={values[name]!r} must be a "
                             "positive integer")
    if "intermediate_size" not in values and raw.get("mlp_ratio"):  # OLMo-style configs
        values["intermediate_size"] = raw["mlp_ratio"] * values.get("hidden_size", 0)
    missing = [" or ".join(layout.keys[name]) for name in REQUIRED if name not in values]
    if missing:
        raise ValueError(f"{path / CONFIG}: missing required key(s) {missing}")
    values.setdefault("head_dim", values["hidden_size"] // values["num_heads"])
    values.setdefault("num_kv_heads", values["num_heads"])
    rope = raw.get("rope_parameters") or {}  # transformers>=5 moves rope_theta here
    if "rope_theta" not in values and "rope_theta" in rope:
        values["rope_theta"] = rope["rope_theta"]
    for name in ("rope_theta", "rms_norm_eps"):
        if name in values:
            values[name] = float(values[name])
    if isinstance(values.get("eos_token_id"), list):  # HF allows several; the rest end responses too
        eos, *stops = values["eos_token_id"]
        values["eos_token_id"] = eos
        values["stop_token_ids"] = [*values.get("stop_token_ids", []), *stops]
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(f"overrides {unknown} are not supported; allowed keys are {list(OVERRIDABLE)}")
    values.update(overrides)
    values.update(_resolve_token_ids(values, family, path))
    if family in VISION_FAMILIES:
        values.update(_read_vision(raw, path))
    return ModelConfig(family=family, **values)


def config_to_hf(cfg: ModelConfig, path: Path) -> dict[str, Any]:
    """config.json dict for `cfg` in its family's layout; refuses what the layout cannot express."""
    layout = FAMILY_LAYOUTS[cfg.family]
    values = cfg.to_dict()
    out: dict[str, Any] = {"model_type": layout.model_type, "architectures": layout.architectures,
                           "dllm_family": cfg.family, **layout.fixed}
    for name, keys in layout.keys.items():
        out.update({key: values[name] for key in keys})
    if cfg.vision is not None:  # LLaVA's keys, and the stored tower's own config
        out.update(mm_hidden_size=cfg.vision["hidden_size"], mm_vision_select_layer=-2,
                   mm_patch_merge_type=MERGE_TYPES[cfg.max_tiles > 0], image_aspect_ratio=cfg.image_aspect_ratio,
                   vision_config=dict(cfg.vision))
        if cfg.max_tiles:
            out["image_grid_pinpoints"] = cfg.image_grid_pinpoints
    reread = config_from_hf(out, cfg.family, path, {})
    if reread != cfg:
        lost = {f.name for f in dataclass_fields(cfg) if getattr(reread, f.name) != getattr(cfg, f.name)}
        raise ValueError(f"{layout.model_type} config.json cannot express fields {sorted(lost)} of {cfg}")
    return out


def _read_vision(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """ModelConfig's vision fields: the tower (_read_tower) and how images become views."""
    vision = _read_tower(raw, path)
    aspect = raw.get("image_aspect_ratio", "square")
    anyres = isinstance(aspect, str) and aspect.startswith("anyres_max_")
    if aspect != "square" and not anyres:
        raise ValueError(f"{path / CONFIG}: image_aspect_ratio={aspect!r} is not supported: allowed values are "
                         "'square' and 'anyres_max_<N>'")
    merge = raw.get("mm_patch_merge_type", MERGE_TYPES[anyres])
    if merge != MERGE_TYPES[anyres]:
        raise ValueError(f"{path / CONFIG}: mm_patch_merge_type={merge!r} is not supported with image_aspect_ratio="
                         f"{aspect!r}: allowed value is {MERGE_TYPES[anyres]!r} (square: 'flat'; anyres_max_<N>: "
                         "'spatial_unpad')")
    if not anyres:
        return {"vision": vision}
    pinpoints = expand_pinpoints(raw.get("image_grid_pinpoints"), vision["image_size"])
    return {"vision": vision, "image_aspect_ratio": aspect, "image_grid_pinpoints": pinpoints}


def _read_tower(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """The stored tower's config: our `vision_config`, else the SigLIP directory `mm_vision_tower` names
    (relative to the checkpoint or absolute) cut to the layers LLaDA-V keeps (`mm_vision_select_layer`)."""
    if isinstance(raw.get("vision_config"), dict):
        return vision_dict(raw["vision_config"])
    tower = raw.get("mm_vision_tower")
    for where in ([path / tower, Path(tower)] if isinstance(tower, str) else []):
        if (where / CONFIG).is_file():
            full = _read_json(where / CONFIG)
            vision = vision_dict(full.get("vision_config", full))
            vision["num_hidden_layers"] += int(raw.get("mm_vision_select_layer", -2)) + 1
            return vision
    raise ValueError(f"{path / CONFIG}: no vision_config, and mm_vision_tower={tower!r} is not a local SigLIP "
                     "directory with a config.json (relative to the checkpoint or absolute)")


def _check_fixed(raw: dict[str, Any], layout: Layout, path: Path) -> None:
    for key, value in layout.fixed.items():
        if key in raw and raw[key] != value:
            raise ValueError(f"{path / CONFIG}: {key}={raw[key]!r} is not supported (only {value!r})")
    rope = {**(raw.get("rope_parameters") or {}), **(raw.get("rope_scaling") or {})}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"{path / CONFIG}: rope type {rope_type!r} is not supported (only plain RoPE)")


def _resolve_token_ids(values: dict[str, Any], family: str, path: Path) -> dict[str, int]:
    found = {name: values[name] for name in TOKEN_IDS if values.get(name) is not None}
    missing = [name for name in TOKEN_IDS if name not in found]
    if missing and ((path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()):
        found.update({k: v for k, v in _tokenizer_ids(path).items() if k in missing and v is not None})
    known_mask = KNOWN_MASK_IDS.get(family)
    if "mask_token_id" not in found and known_mask is not None and known_mask < values["vocab_size"]:
        found["mask_token_id"] = known_mask
    if "pad_token_id" not in found and "eos_token_id" in found:
        found["pad_token_id"] = found["eos_token_id"]  # as the reference code does
    still = [name for name in TOKEN_IDS if name not in found]
    if still:
        raise ValueError(f"{path}: no {still} in overrides, {CONFIG} or a tokenizer in that directory; "
                         f"pass them as overrides={{...}}")
    stops = values.get("stop_token_ids", [])
    if not isinstance(stops, (list, tuple)):
        raise ValueError(f"{path}: stop_token_ids={stops!r} must be a list of token ids")
    # A stop id outside the vocabulary is never sampled: responses would silently run to the budget.
    for name, token_id in [*found.items(), *(("stop_token_ids", t) for t in stops)]:
        if type(token_id) is not int or not 0 <= token_id < values["vocab_size"]:  # bool is an int subclass
            raise ValueError(f"{path}: {name}={token_id!r} is outside the vocabulary (integer ids 0 to "
                             f"{values['vocab_size'] - 1})")
    return found


def _tokenizer_ids(path: Path) -> dict[str, int | None]:
    tok = load_tokenizer(path)
    # SDAR's tokenizer has <|MASK|> as an added token without declaring it the mask token.
    mask = tok.mask_token_id if tok.mask_token is not None else tok.get_vocab().get("<|MASK|>")
    return {"mask_token_id": mask, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def weights_fingerprint(path: str | Path, hash_up_to: int = 256 * 2**20) -> str:
    """What identifies a checkpoint's weights, for caches keyed on a starting model: the SHA-1 of its
    weight files' bytes when they total at most `hash_up_to` (a tiny model: the same weights anywhere
    share an entry, new weights never reuse an old one), else their names, sizes and modification times
    (reading gigabytes would cost more than the cache saves). "" for a path that is not a directory."""
    files = sorted(f for f in Path(path).glob("*") if f.suffix in (".safetensors", ".bin") and f.is_file())
    digest = hashlib.sha1()
    if sum(f.stat().st_size for f in files) <= hash_up_to:
        for file in files:
            digest.update(file.name.encode() + file.read_bytes())
    else:
        for file in files:
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest() if files else ""


def _read_json(file: Path) -> dict[str, Any]:
    if not file.parent.is_dir():
        raise FileNotFoundError(f"checkpoint directory {file.parent} does not exist")
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object, not {type(raw).__name__}")
    return raw


def _read_tensors(path: Path, dtype: torch.dtype, device: str | torch.device) -> dict[str, torch.Tensor]:
    if (path / WEIGHTS).is_file():
        files = [path / WEIGHTS]
    elif (path / INDEX).is_file():
        weight_map = _read_json(path / INDEX).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{path / INDEX} has no weight_map object (tensor name -> shard file)")
        files = [path / name for name in sorted(set(weight_map.values()))]
    else:
        raise FileNotFoundError(f"no {WEIGHTS} or {INDEX} in {path} (only safetensors checkpoints load)")
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"weights shard {file} listed in {path / INDEX} not found")
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for name in f.keys():
                    tensors[name] = f.get_tensor(name).to(dtype)  # one at a time: peak memory ~ one copy
        except SafetensorError as e:  # its message does not say which file (truncated download, not safetensors)
            raise ValueError(f"{file} is not a readable safetensors file: {e}") from e
    return tensors


def _build(cfg: ModelConfig, tensors: dict[str, torch.Tensor], path: Path,
           device: str | torch.device) -> DiffusionLM:
    layout = FAMILY_LAYOUTS[cfg.family]
    with torch.device("meta"):  # no random init of weights we are about to replace
        model = build_model(cfg)
    expected = model.state_dict()
    ours = {layout.tensor_name(name): name for name in expected}
    for name in set(layout.ignored) - set(ours):
        tensors.pop(name, None)
    if cfg.tie_word_embeddings:  # HF may or may not store the tied head; it is the embedding anyway
        ours.pop(layout.lm_head)
        tensors.pop(layout.lm_head, None)
    missing, unexpected = sorted(set(ours) - set(tensors)), sorted(set(tensors) - set(ours))
    wrong = [f"{name} {tuple(t.shape)} (config.json implies {tuple(expected[ours[name]].shape)})"
             for name, t in tensors.items() if name in ours and t.shape != expected[ours[name]].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: {cfg.family} checkpoint does not match the model: missing tensors "
                         f"{missing}, unexpected tensors {unexpected}, wrong shapes {wrong}")
    state = {ours[name]: t for name, t in tensors.items()}
    if cfg.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    # assign=True gave lm_head its own Parameter: re-tie it.
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.restore_buffers()
    return model


def _write_tensors(path: Path, state: dict[str, torch.Tensor], max_shard_size: int | str) -> None:
    # Clear a previous save's weights: a stale model.safetensors would shadow a new sharded index.
    for old in [path / WEIGHTS, path / INDEX, *path.glob("model-*-of-*.safetensors")]:
        old.unlink(missing_ok=True)
    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        shard = {name: state[name].detach().cpu().contiguous() for name in names}
        save_file(shard, str(path / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (path / INDEX).write_text(json.dumps(index, indent=2) + "\n")
