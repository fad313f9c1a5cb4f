"""The checks of a job.yaml that span stages: references, order, items, conditions, shapes.

Theory of operation. ``link_stages`` gets the stages ``spec.py`` built one by
one and, reporting each problem with its path: (1) resolves every reference
(``inputs.X``, ``stages.S.outputs.O``, ``map.over``, ``when``) to a known input,
stage and declared output; (2) orders the stages so that each comes after
those it reads, reporting a cycle by its members; (3) in that order, counts
the items of each mapped stage (the zipped ``over`` references must have equal
counts), refuses a collection read without mapping over it, checks that a
graph's inputs are the stage's, infers dtypes and shapes where they are known
(declared, or read from a local file's header) so that a condition on a
non-scalar output or a matmul of mismatched shapes is caught before submit.
A reference to an input or stage the schema already refused is not reported
again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UserError
from ..ops.opset import Spec, lookup
from .spec import Ref, StageSpec, at

if TYPE_CHECKING:
    from .spec import _Builder


def link_stages(builder: _Builder, stages: list[StageSpec], known_stages: set[str]) -> list[StageSpec]:
    return _Linker(builder, stages, known_stages).link()


class _Linker:
    def __init__(self, b: _Builder, stages: list[StageSpec], known_stages: set[str]) -> None:
        self.b = b
        self.stages = stages
        self.by_name = {s.name: s for s in stages}
        self.known_stages = known_stages | set(self.by_name)
        self.items: dict[str, int] = {}                 # mapped stage -> its number of items
        self.specs: dict[tuple[str, str], Spec] = {}    # (stage, output) -> dtype and shape, when known

    def link(self) -> list[StageSpec]:
        ok = [s for s in self.stages if self._refs(s)]
        order = self._order(ok)
        for s in order:
            if self._items(s):
                self._graph_inputs(s)
                self._infer(s)
                self._when(s)
        return order

    # --- (1) references --------------------------------------------------------------------------

    def _resolves(self, ref: Ref, place: str, shown: str | None = None) -> bool:
        """True if ``ref`` names something that exists; a problem at ``place`` if it names nothing known."""
        shown = shown or str(ref)
        if ref.kind == "input":
            if ref.name in self.b.inputs:
                return True
            if ref.name not in self.b.known_inputs:
                known = ", ".join(sorted(self.b.known_inputs)) or "none"
                self.b.add(place, f"{shown}: the job has no input {ref.name!r} (its inputs: {known})")
            return False
        stage = self.by_name.get(ref.name)
        if stage is None:
            if ref.name not in self.known_stages:
                self.b.add(place, f"{shown}: no stage is named {ref.name!r} (stages: "
                                  f"{', '.join(sorted(self.known_stages))})")
            return False
        if ref.output not in stage.outputs:
            self.b.add(place, f"{shown}: stage {ref.name} has no output {ref.output!r} (its outputs: "
                              f"{', '.join(stage.outputs) or 'none declared; list them in outputs.formats'})")
            return False
        return True

    def _refs(self, s: StageSpec) -> bool:
        good = all([self._resolves(i.ref, at(s.where, "inputs", i.name)) for i in s.inputs])
        reads = {i.ref for i in s.inputs}
        for ref in s.over:
            good = self._resolves(ref, at(s.where, "map", "over")) and good
            if ref not in reads:
                self.b.add(at(s.where, "map", "over"), f"{ref} is not one of this stage's inputs")
                good = False
        if s.when:
            w = s.when
            good = self._resolves(Ref("stage", w.stage, w.output), at(s.where, "when"), f"{w.stage}.{w.output}") and good
        return good

    # --- (2) order ------------------------------------------------------------------------------

    def _order(self, stages: list[StageSpec]) -> list[StageSpec]:
        names = {s.name for s in stages}
        deps = {s.name: s.reads() & names for s in stages}
        order: list[StageSpec] = []
        done: set[str] = set()
        progress = True
        while progress:
            progress = False
            for s in stages:
                if s.name not in done and deps[s.name] <= done:
                    order.append(s)
                    done.add(s.name)
                    progress = True
        left = [s for s in stages if s.name not in done]
        reported: set[str] = set()
        for s in left:
            if s.name in reported:
                continue
            cycle = _cycle_from(s.name, deps, done)
            reported.update(cycle)
            first = self.by_name[cycle[0]]
            self.b.add(first.where or "stages", "stages form a cycle: " + " -> ".join(cycle + [cycle[0]]))
        return order

    # --- (3) items, inputs, shapes, conditions ------------------------------------------------------

    def _collection(self, ref: Ref) -> int | None:
        """Items behind a per-item reference; None for a single value."""
        if ref.kind == "input":
            spec = self.b.inputs[ref.name]
            return len(spec.sources) if spec.collection else None
        return self.items.get(ref.name)

    def _items(self, s: StageSpec) -> bool:
        good = True
        for i in s.inputs:
            n = self._collection(i.ref)
            if n is not None and i.ref not in s.over and s.name not in self.b.map_broken:
                what = (f"a collection of {n:,} items" if i.ref.kind == "input"
                        else f"per item (stage {i.ref.name} maps over {n:,} items)")
                self.b.add(at(s.where, "inputs", i.name), f"{i.ref} is {what}: map over it "
                                                          f"(map: {{over: {i.ref}}})")
                good = False
        counts = {}
        for ref in s.over:
            if ref.kind == "stage" and ref.name not in self.items:
                self.b.add(at(s.where, "map", "over"), f"{ref} is one output, not one per item (stage {ref.name} "
                                                       "does not map): read it as an ordinary input")
                good = False
            else:
                counts[str(ref)] = self._collection(ref) or 1
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"{k} has {v:,}" for k, v in counts.items())
            self.b.add(at(s.where, "map", "over"), f"the inputs mapped over together need equal numbers of items: {shown}")
            good = False
        if good and s.mapped and counts:
            self.items[s.name] = next(iter(counts.values()))
        return good

    def _graph_inputs(self, s: StageSpec) -> None:
        names = [i.name for i in s.inputs]
        if s.kind == "graph":
            want = [d.name for d in s.graph.inputs]
            missing, extra = [n for n in want if n not in names], sorted(set(names) - set(want))
            if missing or extra:
                self.b.add(at(s.where, "inputs"), f"the inputs must match the graph's inputs {want}: "
                                                  f"missing {missing}, not in the graph {extra}")
        if s.kind == "split":
            for name in s.split_inputs:
                i = next((x for x in s.inputs if x.name == name), None)
                if i is None:
                    self.b.add(at(s.where, "split"), f"split reads {name!r}, which is not an input of "
                                                     f"{'the job' if not s.where else 'this stage'}")
                elif i.ref.kind != "input" or self._collection(i.ref) is not None:
                    self.b.add(at(s.where, "inputs", name), f"{i.ref}: a split needs the shape of its inputs "
                               "when the job is planned, so each must be one job input (not a collection or "
                               "another stage's output)")

    def _feed(self, s: StageSpec, name: str) -> Spec | None:
        i = next((x for x in s.inputs if x.name == name), None)
        if i is None:
            return None
        if i.ref.kind == "stage":
            return self.specs.get((i.ref.name, i.ref.output or ""))
        spec = self.b.inputs[i.ref.name]
        hint = spec.hint
        if hint is not None and i.band is not None and spec.band is None and len(hint.shape) == 3:
            hint = Spec(hint.dtype, hint.shape[1:])
        return hint

    def _infer(self, s: StageSpec) -> None:
        if s.kind == "graph":
            feeds = {d.name: self._feed(s, d.name) for d in s.graph.inputs}
            if any(f is None and (d.dtype is None or d.shape is None) for d, f in zip(s.graph.inputs, feeds.values())):
                return  # shapes known only at run time
            try:
                specs = s.graph.infer({k: v for k, v in feeds.items() if v is not None})
            except UserError as exc:
                self.b.add(at(s.where, "ops"), str(exc))
                return
            for out in s.graph.outputs:
                self.specs[(s.name, out)] = specs[out]
        elif s.kind == "split" and s.split_inputs:
            a, b = (self._feed(s, n) for n in s.split_inputs)
            if a is None or b is None:
                return
            if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[1] != b.shape[0]:
                self.b.add(at(s.where, "split"), f"matmul of {a} and {b}: a split matmul needs A (m x k) and "
                                                 "B (k x n)")
                return
            try:
                self.specs[(s.name, s.split_output)] = lookup("matmul").infer([a, b], {})
            except UserError as exc:
                self.b.add(at(s.where, "split"), f"matmul of {a} and {b}: {exc}")

    def _when(self, s: StageSpec) -> None:
        w = s.when
        if w is None:
            return
        place = at(s.where, "when")
        if w.stage in self.items:
            n = self.items[w.stage]
            if self.items.get(s.name) != n or s.batch != 1:
                self.b.add(place, f"stage {w.stage} maps over {n:,} items, so its {w.output} is per item: this "
                                  f"stage must map over the same {n:,} items with batch 1")
        spec = self.specs.get((w.stage, w.output))
        if spec is not None and spec.shape != ():
            self.b.add(place, f"a condition needs a scalar output, and {w.stage}.{w.output} is {spec} "
                              "(reduce it first, e.g. with reduce_mean)")


def _cycle_from(start: str, deps: dict[str, set[str]], done: set[str]) -> list[str]:
    """A cycle among the stages not ordered, found by walking dependencies from ``start``."""
    path: list[str] = []
    node = start
    while node not in path:
        path.append(node)
        node = min(deps[node] - done)
    return path[path.index(node):]
