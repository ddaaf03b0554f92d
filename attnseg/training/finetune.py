"""The ``finetune`` section applied to a new run: load the source's matching tensors, record them,
and freeze what the user asked to keep fixed (attnseg.training.init_from, attnseg.training.freeze)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from attnseg.errors import ConfigError
from attnseg.fileio import read_json, write_json
from attnseg.model_dir import ModelDir
from attnseg.training.config import Config
from attnseg.training.freeze import Freezer
from attnseg.training.init_from import INIT_FILE, load_matching


def start_finetune(
    config: Config, model: nn.Module, model_dir: ModelDir, *, resume: bool, is_main: bool
) -> Callable[[int], None] | None:
    """Initialise ``model`` from ``finetune.init_from`` (not when resuming: the checkpoint holds the
    weights then) and freeze ``finetune.freeze``; returns the per-epoch callback that releases the freeze
    after ``finetune.freeze_epochs`` (None when nothing is frozen)."""
    section = config.finetune
    record: dict = {}
    if section.init_from is not None and not resume:
        loaded = load_matching(model, section.init_from)
        record = loaded.to_dict()
        if is_main:
            print(loaded.summary(), flush=True)
    elif section.init_from is not None and model_dir.file(INIT_FILE).is_file():
        record = read_json(model_dir.file(INIT_FILE), error=ConfigError)  # resumed: what the start loaded
    fresh = list(record.get("fresh", {}))  # random, not the source's: frozen, they would stay random
    freezer = Freezer(model, section.freeze, section.freeze_epochs, keep=fresh) if section.freeze else None
    if freezer is not None:
        record["frozen"] = freezer.names(model)
        record["frozen_epochs"] = section.freeze_epochs or "all"
        if is_main:
            span = f"the first {section.freeze_epochs} epoch(s)" if section.freeze_epochs else "the whole run"
            print(f"finetune: {len(record['frozen'])} encoder tensor(s) frozen for {span}", flush=True)
            kept = freezer.kept_names(model)
            if kept:
                print(f"finetune: left trainable, initialised fresh: {', '.join(kept)}", flush=True)
    if record and is_main and not resume:
        model_dir.path.mkdir(parents=True, exist_ok=True)
        write_json(model_dir.file(INIT_FILE), record, overwrite=True)
    return freezer.at_epoch if freezer is not None else None
