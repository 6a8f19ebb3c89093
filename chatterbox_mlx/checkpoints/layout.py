"""The converted checkpoint format: what a chatterbox-mlx model folder holds, and reading it.

    config.json             format, variant, dtype, quantization, every network's config,
                            the built-in voice's file, tokenizer files, generation defaults,
                            provenance
    <network>.safetensors   one per network of :data:`NETWORKS`, MLX names and layouts
    conds.safetensors       the built-in voice (``Conditionals.save`` layout)
    tokenizer files         copied from the original checkpoint

:data:`NETWORKS` is the table of networks, each with direct references to its config
class, model class and ``sanitize``. :func:`read_config` checks the whole of
``config.json`` and names the first wrong field; :func:`load_checkpoint` loads a folder
into :class:`Components`, refusing missing, unexpected, mis-shaped and non-finite tensors.

Nothing here downloads or converts: ``convert`` writes folders in this format and
``hub`` finds them. Imports run ``hub -> convert -> checkpoint`` (and ``originals``, the
original files, beside it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx

from ..models import campplus, flow, hift, s3tokenizer, t3, voice_encoder
from ..models.weights import (
    CheckpointError,
    check_finite_tensors,
    load_safetensors,
    load_strict,
)
from ..variants import Variant, get_variant
from ..voice.conditionals import Conditionals

FORMAT_NAME = "chatterbox-mlx"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
CONDS_FILE = "conds.safetensors"
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
QUANTIZATION_BITS = (4, 8)
QUANTIZATION_GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class Network:
    """One network of a Chatterbox model: where its weights come from, how they map."""

    name: str  # config.json key and file stem
    label: str  # its name in messages
    config_class: type
    model_class: type
    sanitize: Callable[[dict], dict]  # the original file's keys -> the model's parameters
    source: str  # which original file holds it: "t3", "s3gen" or "ve"
    prefix: str  # its key prefix inside that file
    default_config: Callable[[Variant], object]  # the variant's config of this network
    float32_only: bool = False  # the voice-cloning front end stays float32 whatever --dtype
    quantize: Callable | None = None  # quantize(model, bits, group_size) in place

    @property
    def file(self) -> str:
        return f"{self.name}.safetensors"

    def stored_dtype(self, dtype: str) -> str:
        """The dtype this network is stored in when a conversion asks for ``dtype``."""
        return "float32" if self.float32_only else dtype

    def build(self, config, quantization: Mapping | None = None):
        """An unloaded model; with ``quantization``, quantized layers are made first so
        that quantized weights fit."""
        model = self.model_class(config)
        if quantization and self.quantize is not None:
            self.quantize(model, quantization["bits"], quantization["group_size"])
        return model


def _t3_config(variant: Variant):
    return getattr(t3.T3Config, variant.t3_config)()


def _flow_config(variant: Variant):
    return flow.FlowConfig.meanflow_config() if variant.meanflow else flow.FlowConfig.english()


# Cheap networks first, so a bad file fails before the 2 GB T3 is converted.
NETWORKS = (
    Network(
        "voice_encoder", "VE", voice_encoder.VoiceEncoderConfig, voice_encoder.VoiceEncoder,
        voice_encoder.sanitize, "ve", "", lambda _: voice_encoder.VoiceEncoderConfig(),
        float32_only=True,
    ),
    Network(
        "s3tokenizer", "S3Tokenizer", s3tokenizer.S3TokenizerConfig, s3tokenizer.S3TokenizerV2,
        s3tokenizer.sanitize, "s3gen", "tokenizer.", lambda _: s3tokenizer.S3TokenizerConfig(),
        float32_only=True,
    ),
    Network(
        "campplus", "CAMPPlus", campplus.CAMPPlusConfig, campplus.CAMPPlus, campplus.sanitize,
        "s3gen", "speaker_encoder.", lambda _: campplus.CAMPPlusConfig(), float32_only=True,
    ),
    Network(
        "flow", "flow", flow.FlowConfig, flow.CausalMaskedDiffWithXvec, flow.sanitize,
        "s3gen", "flow.", _flow_config,
    ),
    Network(
        "hift", "HiFT", hift.HiFTConfig, hift.HiFTGenerator, hift.sanitize, "s3gen",
        "mel2wav.", lambda _: hift.HiFTConfig.s3gen(),
    ),
    Network(
        "t3", "T3", t3.T3Config, t3.T3, t3.sanitize, "t3", "", _t3_config,
        quantize=t3.quantize_t3,
    ),
)  # fmt: skip
NETWORK_NAMES = tuple(net.name for net in NETWORKS)
QUANTIZABLE = tuple(net.name for net in NETWORKS if net.quantize is not None)


def config_to_dict(config) -> dict:
    """A network config as ``config.json`` stores it (tuples become lists)."""
    return json.loads(json.dumps(asdict(config)))


def new_config(
    variant: Variant,
    dtype: str,
    quantization: Mapping | None,
    networks: Mapping[str, object],
    tokenizer_files: list[str],
    source: Mapping,
) -> dict:
    """The ``config.json`` of a conversion; ``networks`` maps each name to its config."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "variant": variant.name,
        "dtype": dtype,
        "quantization": dict(quantization, networks=list(QUANTIZABLE)) if quantization else None,
        "networks": {
            net.name: {
                "file": net.file,
                "dtype": net.stored_dtype(dtype),
                "config": config_to_dict(networks[net.name]),
            }
            for net in NETWORKS
        },
        "conds_file": CONDS_FILE,
        "tokenizer_files": list(tokenizer_files),
        "generation": dict(variant.generation),
        "source": dict(source),
    }


def write_config(directory: Path, config: Mapping) -> None:
    (Path(directory) / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


# ---------------------------------------------------------------------------- reading


def is_converted(directory: Path) -> bool:
    """Whether ``directory`` holds a chatterbox-mlx conversion (its ``config.json`` says so;
    whether it is valid is :func:`read_config`'s question)."""
    try:
        data = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT_NAME


def _damaged(config_path: Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"{config_path}: {problem}. The folder is damaged or was not written by chatterbox-mlx: "
        f"delete {config_path.parent} and convert the model again"
    )


_KINDS: dict[type, str] = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


def _typed(config_path: Path, field_name: str, value, kind: type):
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        got = f"{type(value).__name__} {json.dumps(value)[:60]}"
        raise _damaged(config_path, f"'{field_name}' must be {_KINDS[kind]}, got {got}")
    return value


def _file_name(config_path: Path, field_name: str, value) -> str:
    """A plain file name inside the folder (no directories, nothing outside it)."""
    name = _typed(config_path, field_name, value, str)
    if name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise _damaged(config_path, f"'{field_name}' must name a file in the folder, got {name!r}")
    return name


def _choice(config_path: Path, field_name: str, value, choices) -> object:
    if value not in choices:
        listing = ", ".join(str(c) for c in choices)
        raise _damaged(config_path, f"'{field_name}' must be one of {listing}, got {value!r}")
    return value


def _object(config_path: Path, field_name: str, value, required: set, optional: set) -> dict:
    data = _typed(config_path, field_name, value, dict)
    where = f"'{field_name}'" if field_name else "the top level"
    missing = sorted(required - set(data))
    if missing:
        raise _damaged(config_path, f"{where} has no field '{missing[0]}'")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        raise _damaged(config_path, f"{where} has an unknown field '{unknown[0]}'")
    return data


def network_config(net: Network, data: Mapping, config_path: Path):
    """``net``'s config from its ``config.json`` entry (the config class's strict
    ``from_dict``), with any refusal naming the field."""
    try:
        return net.config_class.from_dict(data)
    except (TypeError, ValueError, KeyError) as err:
        raise _damaged(config_path, f"'networks.{net.name}.config' is not valid ({err})") from err


def _check_quantization(config_path: Path, value) -> None:
    if value is None:
        return
    q = _object(config_path, "quantization", value, {"bits", "group_size"}, {"networks"})
    _choice(config_path, "quantization.bits", q["bits"], QUANTIZATION_BITS)
    _choice(config_path, "quantization.group_size", q["group_size"], QUANTIZATION_GROUP_SIZES)
    names = _typed(config_path, "quantization.networks", q.get("networks", list(QUANTIZABLE)), list)
    for name in names:
        _choice(config_path, "quantization.networks[]", name, QUANTIZABLE)


def check_config(data, config_path: Path) -> dict:
    """Check the whole structure of a parsed ``config.json``; return it unchanged."""
    required = {"format", "format_version", "variant", "dtype", "networks"}
    optional = {"quantization", "conds_file", "tokenizer_files", "generation", "source"}
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"{config_path} is not a chatterbox-mlx config (format: {found!r}); convert the "
            "original model with `python convert.py SOURCE -o DIR`"
        )
    if "format_version" not in data:
        raise _damaged(config_path, "the top level has no field 'format_version'")
    version = _typed(config_path, "format_version", data["format_version"], int)
    if version > FORMAT_VERSION:  # before the fields: a newer version may have others
        raise CheckpointError(
            f"{config_path} has format version {version}; this chatterbox-mlx reads up to "
            f"{FORMAT_VERSION}. Upgrade chatterbox-mlx."
        )
    config = _object(config_path, "", data, required, optional)
    try:
        get_variant(_typed(config_path, "variant", config["variant"], str))
    except ValueError as err:
        raise _damaged(config_path, f"'variant': {err}") from err
    _choice(config_path, "dtype", config["dtype"], tuple(DTYPES))
    _check_quantization(config_path, config.get("quantization"))
    networks = _object(config_path, "networks", config["networks"], set(NETWORK_NAMES), set())
    for net in NETWORKS:
        where = f"networks.{net.name}"
        entry = _object(config_path, where, networks[net.name], {"file", "config"}, {"dtype"})
        _file_name(config_path, f"{where}.file", entry["file"])
        if "dtype" in entry:
            _choice(config_path, f"{where}.dtype", entry["dtype"], tuple(DTYPES))
        _typed(config_path, f"{where}.config", entry["config"], dict)
        network_config(net, entry["config"], config_path)
    _file_name(config_path, "conds_file", config.get("conds_file", CONDS_FILE))
    for name in _typed(config_path, "tokenizer_files", config.get("tokenizer_files", []), list):
        _file_name(config_path, "tokenizer_files[]", name)
    _typed(config_path, "generation", config.get("generation", {}), dict)
    _typed(config_path, "source", config.get("source", {}), dict)
    return config


def read_config(directory: Path) -> dict:
    """The checked ``config.json`` of a converted folder.

    A missing file is a FileNotFoundError; an unreadable, truncated or wrong one a
    CheckpointError that names the file, the field and the fix."""
    config_path = Path(directory) / CONFIG_FILE
    try:
        text = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{config_path} is missing: {directory} is not a converted chatterbox-mlx folder; "
            "convert the model first (`python convert.py SOURCE -o DIR`)"
        ) from None
    except OSError as err:
        raise CheckpointError(f"cannot read {config_path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise _damaged(config_path, f"not text ({err.reason} at byte {err.start})") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise _damaged(config_path, f"not valid JSON, truncated or corrupt ({err})") from err
    return check_config(data, config_path)


# ---------------------------------------------------------------------------- loading


@dataclass
class Components:
    """A converted model: its config, the loaded networks and the built-in voice."""

    path: Path
    config: dict
    variant: Variant
    t3: object = None
    flow: object = None
    hift: object = None
    s3tokenizer: object = None
    campplus: object = None
    voice_encoder: object = None
    conds: Conditionals | None = None  # the built-in voice
    tokenizer_files: list[Path] = field(default_factory=list)

    @property
    def generation(self) -> dict:
        return dict(self.config.get("generation", {}))


def load_network(directory: Path, config: Mapping, net: Network):
    """One network of a converted folder whose ``config`` was checked by read_config."""
    config_path = Path(directory) / CONFIG_FILE
    entry = config["networks"][net.name]
    quantization = config.get("quantization")
    if quantization and net.name not in quantization.get("networks", QUANTIZABLE):
        quantization = None
    try:
        model = net.build(network_config(net, entry["config"], config_path), quantization)
    except (TypeError, ValueError) as err:  # values of the right kinds that build nothing
        raise _damaged(
            config_path, f"'networks.{net.name}.config' does not describe a {net.label} ({err})"
        ) from err
    path = Path(directory) / entry["file"]
    load_strict(model, load_safetensors(path), f"{net.label} ({path})")
    model.eval()
    return model


def load_conds(path: Path) -> Conditionals:
    """The built-in voice, refusing non-finite tensors."""
    tensors = load_safetensors(path)
    check_finite_tensors(tensors, f"the built-in voice ({path})")
    return Conditionals.from_flat(tensors, str(path))


def load_checkpoint(
    directory: str | Path, variant: str | None = None, networks: tuple[str, ...] | None = None
) -> Components:
    """Load a converted folder: its checked config, ``networks`` (default: all of
    :data:`NETWORKS`) and the built-in voice. ``variant``, when given, must match."""
    directory = Path(directory)
    config = read_config(directory)
    if variant is not None and get_variant(variant).name != config["variant"]:
        raise CheckpointError(
            f"{directory} holds the {config['variant']} variant, not {get_variant(variant).name}"
        )
    wanted = tuple(networks) if networks else NETWORK_NAMES
    unknown = sorted(set(wanted) - set(NETWORK_NAMES))
    if unknown:
        raise ValueError(f"unknown networks {unknown}; known: {list(NETWORK_NAMES)}")
    parts = {n.name: load_network(directory, config, n) for n in NETWORKS if n.name in wanted}
    conds_path = directory / config.get("conds_file", CONDS_FILE)
    return Components(
        path=directory,
        config=config,
        variant=get_variant(config["variant"]),
        conds=load_conds(conds_path) if conds_path.is_file() else None,
        tokenizer_files=[directory / f for f in config.get("tokenizer_files", [])],
        **parts,
    )
