"""Model configuration, and the config machinery every package's config uses.

Each package owns one frozen dataclass (``ModelConfig`` here, ``PairingConfig`` in
``pairing/config.py``, ...). ``deploy/config.py`` composes them into the run config. The
machinery that reads YAML and dotted overrides into any such dataclass, coerces and checks
types, names unknown keys, validates and documents (a field's docstring, the string literal
right under it, is its one-line documentation) lives here, in the bottom layer, so that
every package can load its own section without importing the driver, and without torch or
transformers.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import itertools
import textwrap
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot work, named so that a person can fix it.

    The message reads ``<key>=<value>: <constraint>. Fix: <fix>``.
    """

    def __init__(self, key: str, value: Any, constraint: str, fix: str):
        self.key, self.value, self.constraint, self.fix = key, value, constraint, fix
        super().__init__(f"{key}={value!r}: {constraint}. Fix: {fix}")


def check(ok: bool, key: str, value: Any, constraint: str, fix: str) -> None:
    """Raise ``ConfigError(key, value, constraint, fix)`` unless ``ok``."""
    if not ok:
        raise ConfigError(key, value, constraint, fix)


DTYPES = ("float32", "bfloat16", "float16")
LOGPROB_MODES = ("combined", "conditional")
IMAGE_IMPLEMENTATIONS = ("reference", "static")  # the keys of models.unified.IMAGE_SAMPLERS


SCHEDULES = ("cosine", "linear")  # the keys of models.showo_diffusion.SCHEDULES
ESTIMATORS = ("one_step", "trajectory")  # models.showo_diffusion.ESTIMATORS


@dataclass(frozen=True)
class MaskedDiffusionConfig:
    """Image generation and scoring of a masked-diffusion family (``model.arch: showo``);
    Janus ignores it."""

    steps: int = 18
    """Parallel unmasking steps per image (Show-o's t2i_generate default, after MaskGIT)."""
    schedule: str = "cosine"
    """Mask schedule gamma(r), the share still masked after progress r: cosine (Show-o) | linear."""
    remask_temperature: float = 1.0
    """Scale of the Gumbel noise on re-masking confidences, annealed by (1 - r) (Show-o: 1.0)."""
    logprob_estimator: str = "one_step"
    """Image-token log-prob estimate of rollouts: one_step (diffu-GRPO, DSR appendix A.3): each
    token from a fully masked canvas, prompt tokens randomly dropped; trajectory: each token
    on the canvas the sampler drew it from (one learner pass per unmasking step). Tokens with
    no trajectory (DSR's R_U of a data set's image) always get one_step."""
    prompt_drop_prob: float = 0.15
    """Probability that the one-step estimate drops each prompt text token (d1's p_mask_prompt
    in its scripts; 0 = the whole prompt)."""
    mask_seed: int = 0
    """Seed mixed into each rollout's prompt-drop mask (SHA-256 of seed, prompt, tokens)."""
    cond_dropout_prob: float = 0.1
    """SFT only: probability that a generation example's whole prompt is replaced by the empty
    one, so the unconditional stream of CFG is trained too (Show-o's training configs,
    ``training.cond_dropout_prob: 0.1``)."""

    def validate(self) -> None:
        check(self.steps >= 1, "model.diffusion.steps", self.steps, "must be >= 1", "use 18")
        check(
            self.schedule in SCHEDULES,
            "model.diffusion.schedule",
            self.schedule,
            f"must be one of {SCHEDULES}",
            "use cosine",
        )
        check(
            self.remask_temperature >= 0,
            "model.diffusion.remask_temperature",
            self.remask_temperature,
            "must be >= 0",
            "use 1.0 (0: re-mask by confidence alone)",
        )
        check(
            self.logprob_estimator in ESTIMATORS,
            "model.diffusion.logprob_estimator",
            self.logprob_estimator,
            f"must be one of {ESTIMATORS}",
            "use one_step",
        )
        check(
            0.0 <= self.prompt_drop_prob < 1.0,
            "model.diffusion.prompt_drop_prob",
            self.prompt_drop_prob,
            "must be in [0, 1)",
            "use 0.15",
        )
        check(
            0.0 <= self.cond_dropout_prob < 1.0,
            "model.diffusion.cond_dropout_prob",
            self.cond_dropout_prob,
            "must be in [0, 1)",
            "use 0.1 (Show-o's)",
        )


@dataclass(frozen=True)
class ModelConfig:
    """The unified model: where it loads from and how it samples."""

    arch: str = "janus"
    """Model family (``models.registry.FAMILIES``): janus | showo."""
    path: str = ""
    """Local checkpoint directory (HF format, as published for Janus-Pro). Empty: a tiny random model."""
    dtype: str = "float32"
    """Parameter dtype: float32 (CPU) | bfloat16 | float16."""
    device: str = "cpu"
    """Torch device for this role's copy of the model: cpu | cuda | cuda:N."""
    cfg_weight: float = 5.0
    """Classifier-free guidance weight w for image tokens; must be > 1 (Janus-Pro uses 5)."""
    image_temperature: float = 1.0
    """Sampling temperature for image tokens."""
    text_temperature: float = 1.0
    """Sampling temperature for text answers."""
    max_new_tokens: int = 64
    """Longest sampled answer, in tokens."""
    image_logprob_mode: str = "combined"
    """Image-token policy the learner scores: combined (CFG-mixed, as sampled) | conditional (T2I-R1)."""
    image_logprob_chunk: int = 64
    """Image positions per chunk when the learner scores image tokens (head, log-softmax and
    their backward recomputed per chunk): bounds the [2N, K, 16384] fp32 logits; 0 = one pass."""
    image_implementation: str = "reference"
    """Image-token sampling loop: reference (plain loop) | static (static KV cache, CUDA graphs on GPU)."""
    train_vision_tower: bool = False
    """Train the SigLIP understanding tower too (frozen by default)."""
    seed: int = 0
    """Seed of the tiny random model when path is empty."""
    diffusion: MaskedDiffusionConfig = dataclasses.field(default_factory=MaskedDiffusionConfig)
    """Masked-diffusion image generation (``model.arch: showo``)."""

    def validate(self) -> None:
        from models.registry import FAMILIES

        check(
            self.arch in FAMILIES,
            "model.arch",
            self.arch,
            f"must be a registered model family, one of {list(FAMILIES)}",
            "use 'janus' or 'showo' (a new family registers itself in models/registry.py)",
        )
        check(
            self.arch != "showo" or self.image_implementation == "reference",
            "model.image_implementation",
            self.image_implementation,
            "Show-o has one image sampler, 'reference'",
            "set model.image_implementation=reference with model.arch=showo",
        )
        check(
            self.dtype in DTYPES,
            "model.dtype",
            self.dtype,
            f"must be one of {DTYPES}",
            "use float32 on CPU, bfloat16 on GPU",
        )
        check(
            self.cfg_weight > 1.0,
            "model.cfg_weight",
            self.cfg_weight,
            "must be > 1 (transformers' Janus image generation divides by it)",
            "use 5.0 as Janus-Pro does",
        )
        check(
            self.image_temperature > 0,
            "model.image_temperature",
            self.image_temperature,
            "must be > 0",
            "use 1.0",
        )
        check(
            self.text_temperature > 0,
            "model.text_temperature",
            self.text_temperature,
            "must be > 0",
            "use 1.0",
        )
        check(
            self.max_new_tokens >= 1,
            "model.max_new_tokens",
            self.max_new_tokens,
            "must be >= 1",
            "use 64",
        )
        check(
            self.image_logprob_mode in LOGPROB_MODES,
            "model.image_logprob_mode",
            self.image_logprob_mode,
            f"must be one of {LOGPROB_MODES}",
            "use 'combined'",
        )
        check(
            self.image_logprob_chunk >= 0,
            "model.image_logprob_chunk",
            self.image_logprob_chunk,
            "must be >= 0 (0: no chunking)",
            "use 64",
        )
        check(
            self.image_implementation in IMAGE_IMPLEMENTATIONS,
            "model.image_implementation",
            self.image_implementation,
            f"must be one of {IMAGE_IMPLEMENTATIONS}",
            "use 'static' for rollout speed, 'reference' to debug",
        )
        check(
            self.device == "cpu" or self.device.startswith("cuda"),
            "model.device",
            self.device,
            "must be cpu, cuda or cuda:N",
            "use cpu without a GPU",
        )


# ---- field documentation (the string literal under each field) -----------------------------
def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}`` read from the class source (attribute docstrings); a field a
    subclass inherits, or redeclares without a docstring (a new default), keeps its base's."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body
    docs = {}
    for stmt, nxt in itertools.pairwise(body):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = nxt.value.value.strip()
    return docs


def describe(cls, prefix: str = "") -> list[tuple[str, Any, str]]:
    """Every leaf key of a config class as (dotted key, default, docstring)."""
    rows = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            rows += describe(typ, f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((prefix + f.name, default, docs.get(f.name, "")))
    return rows


# ---- construction from plain data ----------------------------------------------------------
def _all_keys(cls, prefix: str = "") -> list[str]:
    return [k for k, _, _ in describe(cls, prefix)] + [
        prefix + f.name
        for f in dataclasses.fields(cls)
        if dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name])
    ]


def _unknown(key: str, value: Any, root_cls) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(root_cls), n=1, cutoff=0.5)
    fix = f"did you mean '{close[0]}'?" if close else "run `pairuni config keys` to list valid keys"
    return ConfigError(key, value, "is not a config key", fix)


def _coerce(value: Any, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e.constraint)
        raise ConfigError(key, value, f"must be {typ}", "pass a value of that type")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, f"must be a list ({typ})", "write it as [a, b, ...]")
        args = typing.get_args(typ)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, f"must be a mapping ({typ})", "write it as {k: v}")
        _, vt = typing.get_args(typ) or (Any, Any)
        return {k: _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-6" as a string
            return float(value)
        except ValueError:
            pass
    if (isinstance(typ, type) and not isinstance(value, typ)) or (
        typ is int and isinstance(value, bool)
    ):
        raise ConfigError(
            key,
            value,
            f"must be of type {typ.__name__}, got {type(value).__name__}",
            f"pass a {typ.__name__}",
        )
    return value


def from_dict(cls: type[T], data: dict | None, prefix: str = "", root_cls=None) -> T:
    """Build the (nested) frozen dataclass ``cls`` from plain data; unknown keys are errors."""
    root_cls = root_cls or cls
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(
            prefix.rstrip(".") or "<root>",
            data,
            "must be a mapping of keys",
            "write the section as `key: value` lines",
        )
    if hasattr(cls, "upgrade_keys"):  # a section that renamed keys reads the old ones too
        data = cls.upgrade_keys(dict(data), prefix)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise _unknown(prefix + str(key), data[key], root_cls)
    kwargs = {}
    for name in names & set(data):
        typ, key = hints[name], prefix + name
        if dataclasses.is_dataclass(typ):
            kwargs[name] = from_dict(typ, data[name], key + ".", root_cls)
        else:
            kwargs[name] = _coerce(data[name], typ, key)
    return cls(**kwargs)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=c`` overrides (values parsed as YAML) to nested plain data, in order."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                item, None, "an override must look like key.sub=value", f"write e.g. {item}=VALUE"
            )
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    key, raw, f"'{part}' is a value, not a section", "override a leaf key"
                )
        node[parts[-1]] = value
    return data


def validate_all(cfg: Any) -> None:
    """Call ``validate()`` on every nested section, then on ``cfg`` itself."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate_all(value)
    if hasattr(cfg, "validate"):
        cfg.validate()


def load_config(
    cls: type[T], yaml_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> T:
    """YAML file (optional) + dotted overrides -> validated frozen ``cls`` instance."""
    data: dict = {}
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the top level must be a mapping of sections")
    cfg = from_dict(cls, apply_overrides(data, list(overrides)))
    validate_all(cfg)
    return cfg


def to_dict(cfg: Any) -> dict:
    """Plain, YAML-safe data of a config (tuples become lists)."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def write_resolved(cfg: Any, run_dir: str | Path) -> Path:
    """Write the resolved config as ``run_dir/config.yaml``; returns its path."""
    path = Path(run_dir) / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path
