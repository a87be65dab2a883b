"""TrainConfig: every hyperparameter and data setting of a run, and the command-line flags made from it.

    TrainConfig()                      the seed's recipe (the defaults)
    add_arguments(parser)              one flag per field, generated: --epochs, --max-lr, --widths 64,128,...
    config_from_args(args)             the parsed flags -> TrainConfig

The flags are generated from the dataclass, so a new field is a new flag with
its help text, and `train_modal.py` (local and on Modal) never repeats them.
Naming: `max_lr` -> `--max-lr`; a bool that defaults to True gets `--no-<name>`;
tuples of ints are comma-separated; the model's fields (ModelConfig) are flags
too. The feature config is not a flag: it is the signal chain DESIGN.md fixes.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_type_hints

from core.datasets import Split
from core.esc50_download import ESC50_URL
from core.features import FeatureConfig
from core.model import ModelConfig


def opt(default: Any, help: str, flag: str | None = None) -> Any:
    """A TrainConfig field with its flag's help text (and its flag, when not derived from the name)."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class TrainConfig:
    # data: ESC-50 in data_dir (downloaded once if missing) or your own (core.custom_datasets), folds, cache
    data_dir: str = opt("data", "dataset folder: ESC-50 (downloaded into it if missing), class subfolders "
                                "(DIR/<class>/*.wav), or DIR/labels.csv (filename,label[,fold])")
    data_url: str = opt(ESC50_URL, "where ESC-50's archive is downloaded from")
    data_sha256: str | None = opt(None, "pin the archive's sha256")
    download: bool = opt(True, "fail instead of downloading ESC-50")
    train_folds: tuple[int, ...] = opt((1, 2, 3, 4), "folds that train")
    val_fold: int = opt(5, "the fold that selects best.pt")
    test_fold: int | None = opt(None, "a held-out fold to report (the holdout protocol); 0 or unset: none")
    folds: int = opt(5, "folds of the seeded stratified split made for data without folds")
    split_seed: int = opt(0, "seed of that split (written to the run's split.csv)")
    clip_seconds: float | None = opt(None, "crop/pad every clip to this many seconds, in training and serving "
                                           "(default: 5, or the longest clip when all are shorter)")
    feature_cache: bool = opt(True, "decode audio every epoch (slow)", flag="--no-cache")
    cache_dir: str | None = opt(None, "feature cache folder (default: <dataset>/.feature-cache)")
    # where the run goes
    runs_dir: str = opt("runs", "folder of runs")
    run_name: str = opt("", "run folder name (default: run-YYYYmmdd-HHMMSS)")
    # the seed's recipe
    epochs: int = opt(100, "epochs to train")
    batch_size: int = opt(32, "clips per batch")
    lr: float = opt(5e-4, "AdamW's learning rate (OneCycleLR drives it from max_lr / 25)")
    weight_decay: float = opt(0.01, "AdamW's weight decay")
    max_lr: float = opt(2e-3, "OneCycleLR's peak learning rate")
    pct_start: float = opt(0.1, "share of the schedule spent warming up")
    label_smoothing: float = opt(0.1, "cross-entropy label smoothing")
    mixup_alpha: float = opt(0.2, "mixup's Beta(alpha, alpha)")
    mixup_prob: float = opt(0.3, "share of batches mixed up")
    freq_mask: int = opt(30, "SpecAugment: widest frequency mask (mel bins)")
    time_mask: int = opt(80, "SpecAugment: widest time mask (frames)")
    # fine-tuning (core.fine_tune)
    init_from: str | None = opt(None, "start from this checkpoint (ours or the seed's best_model.pth); a new "
                                      "classifier head when its classes differ")
    freeze_stages: int = opt(0, "keep the first N stages fixed (1 = the stem, 2 = the stem and layer2, ...)")
    model: ModelConfig = field(default=ModelConfig(num_classes=0))  # 0 classes: as many as the data has
    features: FeatureConfig = field(default=FeatureConfig())
    # how it runs
    seed: int = opt(0, "seed of the data order, augmentations, dropout and initial weights")
    device: str = opt("auto", "auto (cuda, then mps, then cpu), cuda, mps or cpu")
    amp: bool = opt(True, "no mixed precision (CUDA only)")
    channels_last: bool = opt(True, "no channels-last memory format (CUDA only)")
    eval_batch_size: int = opt(64, "clips per evaluation batch")
    progress: bool = opt(True, "no progress bars")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train_folds"] = list(self.train_folds)
        d["model"], d["features"] = self.model.to_dict(), self.features.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        kwargs = {k: d[k] for k in (f.name for f in fields(cls)) if k in d}
        kwargs["train_folds"] = tuple(int(f) for f in kwargs.get("train_folds", cls.train_folds))
        kwargs["model"] = ModelConfig.from_dict(d.get("model", {}))
        kwargs["features"] = FeatureConfig.from_dict(d.get("features", {}))
        return cls(**kwargs)

    @property
    def split(self) -> Split:
        return Split(tuple(self.train_folds), self.val_fold, self.test_fold or None, folds=self.folds)


# Fields a resumed run takes from the caller; every other one comes from last.pt.
RUNTIME_FIELDS = ("data_dir", "data_url", "data_sha256", "download", "feature_cache", "cache_dir",
                  "runs_dir", "device", "amp", "channels_last", "eval_batch_size", "progress")

MODEL_HELP = {
    "num_classes": "classifier outputs; 0: the dataset's class count",
    "stem_channels": "channels of the 7x7 stem",
    "widths": "channels of each residual stage",
    "depths": "blocks in each residual stage",
    "dropout": "dropout before the classifier",
}
GROUPS = {"data_dir": "data", "runs_dir": "run", "epochs": "recipe", "seed": "how it runs"}


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add(group, name: str, dest: str, kind: Any, default: Any, help: str, flag: str | None) -> None:
    flag = flag or "--" + name.replace("_", "-")
    if kind is bool:
        if default:
            flag = flag if flag.startswith("--no-") else "--no-" + flag[2:]
            group.add_argument(flag, dest=dest, action="store_false", help=help)
        else:
            group.add_argument(flag, dest=dest, action="store_true", help=help)
        return
    parse = {int: int, float: float, str: str, tuple[int, ...]: _ints, int | None: int, str | None: str,
             float | None: float}[kind]
    if default not in (None, ""):
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help = f"{help} (default: {shown})"
    group.add_argument(flag, dest=dest, type=parse, default=default, help=help, metavar=name.upper())


def add_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig | None = None) -> None:
    """One flag per TrainConfig (and ModelConfig) field, in groups; dests are "name" / "model.name"."""
    defaults = defaults or TrainConfig()
    hints = get_type_hints(TrainConfig)
    group = None
    for f in fields(TrainConfig):
        if f.name in GROUPS or group is None:
            group = parser.add_argument_group(GROUPS.get(f.name, "data"))
        if f.name == "features":
            continue
        if f.name == "model":
            model_group = parser.add_argument_group("model")
            model_hints = get_type_hints(ModelConfig)
            for m in fields(ModelConfig):
                _add(model_group, m.name, f"model.{m.name}", model_hints[m.name], getattr(defaults.model, m.name),
                     MODEL_HELP[m.name], None)
            continue
        _add(group, f.name, f.name, hints[f.name], getattr(defaults, f.name), f.metadata["help"],
             f.metadata["flag"])


def config_from_args(args: argparse.Namespace, **overrides: Any) -> TrainConfig:
    """The TrainConfig the flags describe (`overrides` replace fields, e.g. paths inside a container)."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in ("model", "features")}
    values["test_fold"] = values["test_fold"] or None  # --test-fold 0 means none
    model = ModelConfig(**{m.name: getattr(args, f"model.{m.name}") for m in fields(ModelConfig)})
    return TrainConfig(**{**values, "model": model, **overrides})
