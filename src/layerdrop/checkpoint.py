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
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from layerdrop.config import check_field_types, flag_name, shorten
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


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (disk full, read-only, ...): the partial write is gone, the old one intact."""


def _write_failure(target: Path, error: BaseException) -> CheckpointWriteError:
    reason = error.strerror if isinstance(error, OSError) and error.strerror else (str(error).splitlines() or [type(error).__name__])[0][:200]
    try:
        free = f"; {shutil.disk_usage(target.parent).free / 2**20:,.0f} MB free there"
    except OSError:
        free = ""
    return CheckpointWriteError(f"{target.parent}: cannot write {target.name} ({reason}{free}); the partial write was removed "
                                f"and the previous {target.name}, if any, is intact")


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
    if len(tokenizer) != config.vocab_size:  # load_checkpoint refuses such a pair: never write one
        raise ValueError(f"a {len(tokenizer)}-token tokenizer with vocab_size {config.vocab_size}")
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        tensors = {k: v.detach().contiguous().cpu() for k, v in _without_aliases(state_dict).items()}
        _write_file(tmp / WEIGHTS, lambda p: save_file(tensors, str(p), metadata={"model_type": model_type}))
        config_json = {"model_type": model_type, **dataclasses.asdict(config)}
        _write_file(tmp / CONFIG, lambda p: p.write_text(json.dumps(config_json, indent=2, allow_nan=False) + "\n"))
        _write_file(tmp / TOKENIZER, lambda p: p.write_text(json.dumps(tokenizer.to_json()) + "\n"))
        if trainer_state is not None:
            _write_file(tmp / TRAINER_STATE, lambda p: torch.save(trainer_state, p))
        if run is not None:
            _write_file(tmp / RUN, lambda p: p.write_text(json.dumps(run, indent=2, allow_nan=False) + "\n"))
        _fsync_dir(tmp)
        replace_dir(tmp, target)
    except (OSError, RuntimeError, SafetensorError) as error:  # torch.save reports a full disk as a RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        recover_dir(target)
        raise _write_failure(target, error) from None
    return target


def check_free_space(directory: Path, needed: int, flag: str = "--save-dir") -> None:
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise UserError(f"{flag}: {directory} has {free / 2**20:,.0f} MB free; saving this model needs about "
                        f"{needed / 2**20:,.0f} MB (a checkpoint with its optimizer state, twice while the old one is "
                        "replaced); valid: free some space or use another --save-dir")


def publish_copy(source: Path, target: Path) -> None:
    """Publish a checkpoint under another name: hard links (files are never modified in place), atomically."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for file in source.iterdir():
            try:
                os.link(file, tmp / file.name)
            except OSError:  # a filesystem without hard links
                shutil.copy2(file, tmp / file.name)
        replace_dir(tmp, target)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        recover_dir(target)
        raise _write_failure(target, error) from None


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Half-written checkpoints (``.NAME.tmp-PID``) left by a killed run; call only while holding the run lock."""
    stale = [p for p in directory.glob(".*.tmp-*") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _read_text(path: Path, flag: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{flag} {path.parent}: {path.name} is not UTF-8 text; the file is damaged or not ours") from None
    except OSError as error:
        raise UserError(f"{flag} {path.parent}: cannot read {path.name} ({error.strerror})") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: Path, flag: str) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(path, flag), parse_constant=_no_constants)
    except (json.JSONDecodeError, ValueError, RecursionError) as error:
        reason = shorten(str(error), 120)
        raise UserError(f"{flag} {path.parent}: {path.name} is not valid JSON ({reason}); the checkpoint may be truncated") from None
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
    if not str(path).strip():
        raise UserError(f"{flag}: got an empty path; valid: a directory holding {WEIGHTS} and {CONFIG}")
    path = Path(path)
    # "." and "checkpoint_best/.." have no name of their own to set aside; such a path is never a half-done save.
    aside = path.with_name(path.name + ".old") if path.name not in ("", "..") else path
    if not path.is_dir() and aside.is_dir():
        # A save was cut short between its two renames. Only the training that owns the directory (holding its
        # lock) may rename it back; a reader takes the previous checkpoint where it is.
        path = aside
    if not path.is_dir():
        hint = " (a file; valid: a checkpoint directory)" if path.exists() else " does not exist"
        raise UserError(f"{flag}: {str(path)!r}{hint}; valid: a directory holding {WEIGHTS} and {CONFIG}")
    missing = [name for name in (WEIGHTS, CONFIG, TOKENIZER) if not (path / name).is_file()]
    if missing:
        raise UserError(f"{flag}: {str(path)!r} is not a complete checkpoint: missing {', '.join(missing)}")
    config_json = read_json(path / CONFIG, flag)
    model_type = config_json.pop("model_type", None)
    if not isinstance(model_type, str) or model_type not in MODEL_TYPES:
        raise UserError(f"{flag}: {path / CONFIG} holds model type {shorten(model_type)}; valid: {', '.join(MODEL_TYPES)}")
    if expected_type is not None and model_type != expected_type:
        raise UserError(f"{flag}: {str(path)!r} holds a {model_type!r} model; this command needs a {expected_type!r} model")
    config_class = MODEL_TYPES[model_type][0]
    known = {f.name for f in dataclasses.fields(config_class)}
    overridable = {f.name for f in dataclasses.fields(config_class) if f.metadata.get("cli", True)}
    for key in overrides or {}:
        if key not in overridable:
            raise UserError(f"--model-overrides: unknown key {shorten(key, 40)}; valid: {', '.join(sorted(overridable))}")
    # Keep lists may be given as a string, a number or a list; parse_layers_to_keep checks them.
    check_field_types(config_class, {k: v for k, v in (overrides or {}).items() if not k.endswith("_to_keep")},
                      "--model-overrides")
    for key in flag_overrides or {}:
        if key not in overridable:
            raise UserError(f"{flag_name(key)}: {str(path)!r} holds a {model_type!r} model, which has no such setting")
    unknown = sorted(set(config_json) - known)
    if unknown:
        raise UserError(f"{flag}: {path / CONFIG} has unknown keys {shorten(unknown)}; is it from a newer layerdrop?")
    check_field_types(config_class, config_json, f"{flag} {path / CONFIG}")
    try:
        config_class(**config_json).validate()
    except UserError as error:
        raise UserError(f"{flag}: {path / CONFIG} holds an invalid model config ({error})") from None
    config = config_class(**{**config_json, **(overrides or {}), **(flag_overrides or {})})
    try:
        state_dict = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError) as error:
        raise UserError(f"{flag}: cannot read {path / WEIGHTS} ({shorten(str(error), 120)}); the file is truncated or not a "
                        "safetensors file") from None
    trainer_state = None
    if with_trainer_state and (path / TRAINER_STATE).is_file():
        trainer_state = _load_trainer_state(path / TRAINER_STATE, flag)
    run = read_json(path / RUN, flag) if (path / RUN).is_file() else None
    tokenizer = load_tokenizer(path / TOKENIZER)
    if len(tokenizer) != config.vocab_size:  # every model is built with one embedding row per token
        raise UserError(f"{flag}: {path / TOKENIZER} has {len(tokenizer):,} tokens but {CONFIG} says vocab_size "
                        f"{config.vocab_size:,}; the files come from different checkpoints")
    return Checkpoint(path, model_type, config, state_dict, tokenizer, trainer_state, run)


def _load_trainer_state(path: Path, flag: str) -> dict[str, Any]:
    try:
        state = torch.load(path, weights_only=True)
    except Exception as error:  # a truncated zip or a pickle with foreign objects
        raise UserError(f"{flag}: cannot read {path} ({shorten(str(error), 120)}); the file is truncated or not ours") from None
    if not isinstance(state, dict) or not {"update", "optimizer"} <= set(state) or not isinstance(state["optimizer"], dict):
        raise UserError(f"{flag}: {path} lacks the update number or optimizer state; the file is not ours")
    update, best = state["update"], state.get("best_valid_loss")
    if isinstance(update, bool) or not isinstance(update, int) or not 0 <= update < 2**62:
        raise UserError(f"{flag}: {path} holds update {shorten(update)}; valid: an update number of 0 or more")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float)) or not math.isfinite(best)):
        raise UserError(f"{flag}: {path} holds best_valid_loss {shorten(best)}; valid: a finite number or none")
    plateau = state.get("plateau", {})  # absent in checkpoints written before the plateau watch was saved
    since = plateau.get("since") if isinstance(plateau, dict) else None
    if (not isinstance(plateau, dict) or set(plateau) - {"since", "warned"} or not isinstance(plateau.get("warned", False), bool)
            or since is not None and (isinstance(since, bool) or not isinstance(since, int) or not 0 < since <= update)):
        raise UserError(f"{flag}: {path} holds plateau {shorten(plateau)}; valid: since (an update from 1 to {update}, "
                        "or none) and warned (true or false)")
    return state


def parse_overrides(text: str | None) -> dict[str, Any]:
    """``--model-overrides "{'decoder_layers_to_keep': '0,2,4'}"``: a Python or JSON dict literal, never evaluated as code."""
    if not text:
        return {}
    valid = "valid: a dict literal such as \"{'decoder_layers_to_keep': '0,2,4'}\""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise UserError(f"--model-overrides: got {shorten(text)}, which is not a literal; {valid}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise UserError(f"--model-overrides: got {shorten(text)}, which is not a dict with string keys; {valid}")
    return value


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_fits_memory(skeleton: torch.nn.Module, source: str) -> None:
    size = sum(p.numel() * p.element_size() for p in skeleton.parameters())
    if size > physical_memory():
        raise UserError(f"{source}: the model would have {sum(p.numel() for p in skeleton.parameters()):,} parameters "
                        f"({size / 2**30:,.1f} GB), more than this machine's memory ({physical_memory() / 2**30:,.1f} GB); "
                        "valid: fewer or narrower layers (--*-layers, --*-embed-dim, --*-ffn-embed-dim)")


def _check_shapes(skeleton: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    for key, expected in skeleton.state_dict().items():
        stored = state_dict.get(key)
        if stored is not None and tuple(stored.shape) != tuple(expected.shape):
            raise UserError(f"{source}: weights do not fit the model config: {key} has shape {tuple(stored.shape)} in the "
                            f"weights and {tuple(expected.shape)} in the config")


def build_model(config: Any, state_dict: dict[str, torch.Tensor] | None, model_type: str, source: str, log: Callable[[str], None] = print):
    """Apply any keep lists (pruning config and weights together), build the model, load the weights."""
    config.validate()
    config, state_dict = apply_layers_to_keep(config, state_dict, log)
    # Shapes and size are checked on a model without storage, so a bad config never allocates.
    with torch.device("meta"):
        skeleton = MODEL_TYPES[model_type][1](config)
    _check_fits_memory(skeleton, source)
    if state_dict is not None:
        _check_shapes(skeleton, state_dict, source)
    model = MODEL_TYPES[model_type][1](config)
    if state_dict is not None:
        keys = model.load_state_dict(_with_aliases(model, state_dict), strict=False)
        if keys.missing_keys or keys.unexpected_keys:  # named by count and first few: a deep model has hundreds
            parts = [f"{len(names)} {what} (first: {', '.join(names[:3])})" for names, what in
                     ((keys.missing_keys, "weights the config needs are missing"),
                      (keys.unexpected_keys, "weights are not in the config")) if names]
            raise UserError(f"{source}: weights do not fit the model config: {'; '.join(parts)}")
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


__all__ = ["Checkpoint", "CheckpointWriteError", "build_model", "check_free_space", "load_checkpoint", "load_model", "parse_overrides", "physical_memory", "publish_copy", "read_json", "recover_dir", "remove_stale_temporaries", "replace_dir", "save_checkpoint"]
