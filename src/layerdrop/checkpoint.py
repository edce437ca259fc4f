"""Checkpoints are directories: ``model.safetensors``, ``config.json``, ``tokenizer.json``, and for
training runs ``trainer_state.pt`` (optimizer, update number) and ``run.json`` (the run's flags).

Writes are atomic: everything goes to a temporary directory beside the target, each file is
fsynced, then the directory is renamed into place, so a crash never leaves a half-written
checkpoint under the real name. Loading never unpickles arbitrary objects (``weights_only=True``).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from layerdrop.config import flag_name
from layerdrop.data.tokenizers import Tokenizer, load_tokenizer
from layerdrop.errors import UserError
from layerdrop.models import MODEL_TYPES
from layerdrop.pruning import apply_layers_to_keep

WEIGHTS, CONFIG, TOKENIZER, TRAINER_STATE, RUN = "model.safetensors", "config.json", "tokenizer.json", "trainer_state.pt", "run.json"


@dataclass
class Checkpoint:
    path: Path
    model_type: str
    config: Any
    state_dict: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    trainer_state: dict[str, Any] | None = None
    run: dict[str, Any] | None = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, write: Callable[[Path], None]) -> None:
    write(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def recover_dir(target: Path) -> None:
    """Undo a swap cut short by a crash: ``target`` was moved aside but the new one never arrived."""
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.is_dir():
        os.replace(old, target)


def replace_dir(source: Path, target: Path) -> None:
    """Move a finished directory over ``target``; the old one is removed only after the new one is in place."""
    recover_dir(target)
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def _without_aliases(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Tied weights (one tensor under two names) are written once; loading restores the alias."""
    seen: set[tuple[int, tuple[int, ...]]] = set()
    out = {}
    for key, tensor in state_dict.items():
        identity = (tensor.data_ptr(), tuple(tensor.shape))
        if identity in seen:
            continue
        seen.add(identity)
        out[key] = tensor
    return out


def _with_aliases(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    expected = model.state_dict()
    names_by_storage: dict[int, list[str]] = {}
    for key, tensor in expected.items():
        names_by_storage.setdefault(tensor.data_ptr(), []).append(key)
    filled = dict(state_dict)
    for key, tensor in expected.items():
        if key not in filled:
            alias = next((k for k in names_by_storage[tensor.data_ptr()] if k in state_dict), None)
            if alias is not None:
                filled[key] = state_dict[alias]
    return filled


def save_checkpoint(
    directory: str | Path,
    model_type: str,
    config: Any,
    state_dict: dict[str, torch.Tensor],
    tokenizer: Tokenizer,
    trainer_state: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> Path:
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors = {k: v.detach().contiguous().cpu() for k, v in _without_aliases(state_dict).items()}
    _write_file(tmp / WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"model_type": model_type}))
    config_json = {"model_type": model_type, **dataclasses.asdict(config)}
    _write_file(tmp / CONFIG, lambda p: p.write_text(json.dumps(config_json, indent=2) + "\n"))
    _write_file(tmp / TOKENIZER, lambda p: p.write_text(json.dumps(tokenizer.to_json()) + "\n"))
    if trainer_state is not None:
        _write_file(tmp / TRAINER_STATE, lambda p: torch.save(trainer_state, p))
    if run is not None:
        _write_file(tmp / RUN, lambda p: p.write_text(json.dumps(run, indent=2) + "\n"))
    _fsync_dir(tmp)
    replace_dir(tmp, target)
    return target


def _read_json(path: Path, flag: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{flag} {path.parent}: {path.name} is not valid JSON ({error}); the checkpoint may be truncated") from None
    if not isinstance(data, dict):
        raise UserError(f"{flag} {path.parent}: {path.name} does not hold a JSON object")
    return data


def load_checkpoint(
    path: str | Path,
    flag: str = "--path",
    expected_type: str | None = None,
    with_trainer_state: bool = False,
    overrides: dict[str, Any] | None = None,
    flag_overrides: dict[str, Any] | None = None,
) -> Checkpoint:
    """Read and check a checkpoint directory. ``overrides`` (from --model-overrides) and ``flag_overrides``
    (from flags such as --decoder-layers-to-keep) replace stored config values before building."""
    path = Path(path)
    recover_dir(path)
    if not path.is_dir():
        hint = " (a file; valid: a checkpoint directory)" if path.exists() else " does not exist"
        raise UserError(f"{flag}: {str(path)!r}{hint}; valid: a directory holding {WEIGHTS} and {CONFIG}")
    missing = [name for name in (WEIGHTS, CONFIG, TOKENIZER) if not (path / name).is_file()]
    if missing:
        raise UserError(f"{flag}: {str(path)!r} is not a complete checkpoint: missing {', '.join(missing)}")
    config_json = _read_json(path / CONFIG, flag)
    model_type = config_json.pop("model_type", None)
    if model_type not in MODEL_TYPES:
        raise UserError(f"{flag}: {str(path)!r} holds model type {model_type!r}; valid: {', '.join(MODEL_TYPES)}")
    if expected_type is not None and model_type != expected_type:
        raise UserError(f"{flag}: {str(path)!r} holds a {model_type!r} model; this command needs a {expected_type!r} model")
    config_class = MODEL_TYPES[model_type][0]
    known = {f.name for f in dataclasses.fields(config_class)}
    overridable = {f.name for f in dataclasses.fields(config_class) if f.metadata.get("cli", True)}
    for key in overrides or {}:
        if key not in overridable:
            raise UserError(f"--model-overrides: unknown key {key!r}; valid: {', '.join(sorted(overridable))}")
    for key in flag_overrides or {}:
        if key not in overridable:
            raise UserError(f"{flag_name(key)}: {str(path)!r} holds a {model_type!r} model, which has no such setting")
    overrides = {**(overrides or {}), **(flag_overrides or {})}
    unknown = sorted(set(config_json) - known)
    if unknown:
        raise UserError(f"{flag}: {path / CONFIG} has unknown keys {unknown}; is it from a newer layerdrop?")
    config = config_class(**{**config_json, **overrides})
    try:
        state_dict = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as error:
        raise UserError(f"{flag}: cannot read {path / WEIGHTS} ({error}); the file is truncated or not a safetensors file") from None
    trainer_state = None
    if with_trainer_state and (path / TRAINER_STATE).is_file():
        try:
            trainer_state = torch.load(path / TRAINER_STATE, weights_only=True)
        except Exception as error:  # a truncated zip or a pickle with foreign objects
            raise UserError(f"{flag}: cannot read {path / TRAINER_STATE} ({error}); the file is truncated or not ours") from None
        if not isinstance(trainer_state, dict) or not {"update", "optimizer"} <= set(trainer_state):
            raise UserError(f"{flag}: {path / TRAINER_STATE} lacks the update number or optimizer state; the file is not ours")
    run = _read_json(path / RUN, flag) if (path / RUN).is_file() else None
    return Checkpoint(path, model_type, config, state_dict, load_tokenizer(path / TOKENIZER), trainer_state, run)


def parse_overrides(text: str | None) -> dict[str, Any]:
    """``--model-overrides "{'decoder_layers_to_keep': '0,2,4'}"``: a Python or JSON dict literal, never evaluated as code."""
    if not text:
        return {}
    valid = "valid: a dict literal such as \"{'decoder_layers_to_keep': '0,2,4'}\""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UserError(f"--model-overrides: got {text!r}, which is not a literal; {valid}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise UserError(f"--model-overrides: got {text!r}, which is not a dict with string keys; {valid}")
    return value


def build_model(config: Any, state_dict: dict[str, torch.Tensor] | None, model_type: str, source: str, log: Callable[[str], None] = print):
    """Apply any keep lists (pruning config and weights together), build the model, load the weights."""
    config.validate()
    config, state_dict = apply_layers_to_keep(config, state_dict, log)
    model = MODEL_TYPES[model_type][1](config)
    if state_dict is not None:
        try:
            model.load_state_dict(_with_aliases(model, state_dict), strict=True)
        except RuntimeError as error:
            first = str(error).splitlines()[0:3]
            raise UserError(f"{source}: weights do not fit the model config ({' '.join(first)})") from None
    return model


def load_model(
    path: str | Path,
    flag: str = "--path",
    overrides: dict[str, Any] | None = None,
    expected_type: str | None = None,
    log: Callable[[str], None] = print,
    flag_overrides: dict[str, Any] | None = None,
):
    """Load a checkpoint for evaluation or generation: (model in eval mode, checkpoint)."""
    ckpt = load_checkpoint(path, flag, expected_type, overrides=overrides, flag_overrides=flag_overrides)
    model = build_model(ckpt.config, ckpt.state_dict, ckpt.model_type, f"{flag} {path}", log)
    model.eval()
    return model, ckpt


__all__ = ["Checkpoint", "build_model", "load_checkpoint", "load_model", "parse_overrides", "recover_dir", "replace_dir", "save_checkpoint"]
