"""Read a GreenModel (or EnergyBudget) YAML file; errors name the file, the line and the field."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import yaml
from pydantic import ValidationError

from greenllm.api.energybudget import EB_KIND, EnergyBudget
from greenllm.api.v1alpha1 import KIND, GreenModel

if TYPE_CHECKING:
    from greenllm.core.energy import EnergyModel


_Object = TypeVar("_Object", GreenModel, EnergyBudget)


class ModelFileError(ValueError):
    """A GreenModel or EnergyBudget file that cannot be used; the message says where and why."""


def _node_for(root: yaml.Node, loc: Sequence[int | str]) -> tuple[yaml.Node, bool]:
    """The YAML node at `loc`, or the deepest existing parent (and False) when the field is absent."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(
                (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None
            )
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            match = node.value[part]
        else:
            match = None
        if match is None:
            return node, False
        node = match
    return node, True


def load_green_model(path: Path | str) -> GreenModel:
    return _load(path, GreenModel, KIND)


def load_energy_budget(path: Path | str) -> EnergyBudget:
    """An EnergyBudget file (`greenllm simulate --budget`), with the same errors as a GreenModel file."""
    return _load(path, EnergyBudget, EB_KIND)


def load_green_models(path: Path | str) -> list[GreenModel]:
    """Every GreenModel of a file, in order (a team's file may hold several, e.g. with their
    EnergyBudget: `greenllm simulate --budget`); at least one."""
    file, nodes = _documents(path, KIND)
    chosen: list[yaml.Node] = [n for n in nodes if isinstance(n, yaml.MappingNode) and _kind(n) == KIND]
    if len(nodes) == 1:
        chosen = nodes  # a lone document is read as a GreenModel whatever it says (the errors name it)
    if not chosen:
        raise ModelFileError(f"{file}: {len(nodes)} YAML documents and none of kind {KIND}")
    return [_validate(file, node, GreenModel, KIND) for node in chosen]


def _load(path: Path | str, model: type[_Object], kind: str) -> _Object:
    file, nodes = _documents(path, kind)
    chosen = nodes[0]
    if len(nodes) > 1:
        kinds = [n for n in nodes if isinstance(n, yaml.MappingNode) and _kind(n) == kind]
        if len(kinds) != 1:
            raise ModelFileError(
                f"{file}: {len(nodes)} YAML documents and {len(kinds)} of kind {kind}; need one"
            )
        chosen = kinds[0]
    return _validate(file, chosen, model, kind)


def _documents(path: Path | str, kind: str) -> tuple[Path, list[yaml.Node]]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{file}: cannot read {kind} file: {exc}") from exc
    try:
        nodes = [n for n in yaml.compose_all(text) if n is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ModelFileError(f"{file}{where}: not valid YAML: {problem}") from exc
    if not nodes:
        raise ModelFileError(f"{file}: empty file, expected a {kind}")
    return file, nodes


def _validate(file: Path, chosen: yaml.Node, model: type[_Object], kind: str) -> _Object:
    document = yaml.safe_load(yaml.serialize(chosen))
    if not isinstance(document, dict):
        raise ModelFileError(
            f"{file} line {chosen.start_mark.line + 1}: expected a mapping (a {kind} object)"
        )
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if isinstance(p, int | str)]
            node, found = _node_for(chosen, loc)
            field = (
                ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
                or "(root)"
            )
            missing = "" if found else " (field absent)"
            msg = err["msg"]
            problems.append(f"{file} line {node.start_mark.line + 1}: field {field}{missing}: {msg}")
        raise ModelFileError(f"invalid {kind}:\n  " + "\n  ".join(problems)) from exc


def _kind(node: yaml.MappingNode) -> str | None:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == "kind" and isinstance(v, yaml.ScalarNode):
            return str(v.value)
    return None


def require_supported_gpu(model: GreenModel, path: Path | str, energy: EnergyModel) -> None:
    """Raise ModelFileError, one line listing the supported types, when the energy model does not know
    `spec.gpu.type`."""
    gpu_type = model.spec.gpu.type
    try:
        energy.gpu(gpu_type)
    except ValueError:
        known = ", ".join(g.name for g in energy.calibration.gpus)
        raise ModelFileError(
            f"{path}: spec.gpu.type {gpu_type!r} is not a supported GPU type; supported: {known} "
            "(or one of their aliases in greenllm/data/gpus.csv)"
        ) from None
