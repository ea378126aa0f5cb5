"""What the core remembers lives in objects, not in its modules (issue 12): a performance source keeps its
own planner catalogs, nothing in `core/` keeps a source (or what it answered) alive, and no core module
grows a module-level cache."""

from __future__ import annotations

import ast
import gc
import weakref
from pathlib import Path

from tests.table_source import TableSource

from greenllm.api.v1alpha1 import GreenModelSpec
from greenllm.calibration import load_calibration
from greenllm.core.decision import Demand
from greenllm.core.energy import EnergyModel
from greenllm.core.performance import PowerSetting, ReplicaPerformance
from greenllm.core.plan_catalog import CatalogMemo, build_catalog, catalog_of
from greenllm.core.plan_rules import curve_facts
from greenllm.core.planner import plan

CORE = Path(__file__).resolve().parents[2] / "operator" / "greenllm" / "core"
DEFAULT = PowerSetting()
CAP = PowerSetting(limit_w=300.0)

# Module-level containers that are not caches, and caches in modules outside this refactor's reach that
# are keyed by content (never by an object's id); each names why it may stay.
ALLOWED = {
    ("render.py", "MANAGED_BY"),  # a constant label set
    ("step.py", "_DURATIONS"),  # parsed duration strings by their text (step.py's own, bounded)
}


def spec() -> GreenModelSpec:
    return GreenModelSpec.model_validate(
        {
            "model": {"name": "meta-llama/Llama-3.1-8B-Instruct", "paramsBillions": 8},
            "gpu": {"type": "H100-SXM", "count": 1},
            "variants": [
                {"name": "bf16", "precision": "bf16", "image": "vllm", "quality": 1.0},
                {"name": "int4", "precision": "int4", "image": "vllm", "quality": 0.98},
            ],
            "replicas": {"min": 1, "max": 8},
        }
    )


def table() -> TableSource:
    def perf(out: float, full_w: float) -> ReplicaPerformance:
        return ReplicaPerformance(out, 20 * out, full_w, ((0.0, 100.0), (out, full_w)))

    return TableSource(
        (DEFAULT, CAP),
        {
            ("bf16", DEFAULT): perf(1000.0, 700.0),
            ("bf16", CAP): perf(800.0, 300.0),
            ("int4", DEFAULT): perf(2000.0, 650.0),
        },
    )


def test_a_source_keeps_its_own_catalogs_with_the_curve_facts() -> None:
    s, a, b = spec(), table(), table()
    first = catalog_of(s, a)
    assert catalog_of(GreenModelSpec.model_validate(s.model_dump(by_alias=True)), a) is first  # by content
    assert catalog_of(s, b) is not first  # another source: its own memo
    assert first == build_catalog(s, a)
    assert first.facts == tuple(curve_facts(p) for _, _, p in first.runnable)


def test_a_source_without_a_memo_is_asked_every_time() -> None:
    class Bare:
        def __init__(self) -> None:
            self.inner = table()

        def power_settings(self, gpu: object, power: object) -> tuple[PowerSetting, ...]:
            return self.inner.settings

        def performance(
            self, spec: GreenModelSpec, variant: object, setting: PowerSetting
        ) -> ReplicaPerformance | None:
            return self.inner.table.get((getattr(variant, "name", ""), setting))

    s, bare = spec(), Bare()
    assert catalog_of(s, bare) is not catalog_of(s, bare)
    assert catalog_of(s, bare) == catalog_of(s, table())


def test_a_memo_is_bounded() -> None:
    memo, src = CatalogMemo(limit=2), table()
    specs = [
        spec().model_copy(update={"slo": spec().slo.model_copy(update={"min_quality": q})})
        for q in (0.1, 0.2, 0.3)
    ]
    first = memo.get(specs[0], src)
    memo.get(specs[1], src)
    assert memo.get(specs[0], src) is first
    memo.get(specs[2], src)  # full: everything is dropped, then this one is kept
    assert memo.get(specs[0], src) is not first


def test_nothing_in_the_core_keeps_a_source_alive() -> None:
    """The planner's memo went with its source: once the caller drops a source (and the answers it gave),
    nothing in the core's modules holds on to it."""
    s, demand = spec(), Demand(1000.0, 3000.0)
    table_source = table()
    model = EnergyModel(load_calibration())
    for source in (table_source, model):
        plan(s, demand, None, source)
    refs = [weakref.ref(table_source), weakref.ref(model)]
    del table_source, model, source
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_no_module_level_cache_in_core() -> None:
    """A module-level dict, list or set in core/ is a cache shared by every GreenModel (and, keyed by id(),
    a hazard once the object is collected and its id reused): remember things in an object instead."""
    found = set()
    for path in sorted(CORE.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            target, value = None, None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign):
                target, value = node.target, node.value
            if not isinstance(target, ast.Name) or value is None:
                continue
            mutable = isinstance(
                value, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp | ast.SetComp
            )
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                mutable = mutable or value.func.id in {"dict", "list", "set", "defaultdict", "OrderedDict"}
            if mutable:
                found.add((path.name, target.id))
    assert found <= ALLOWED, sorted(found - ALLOWED)
