"""prepare as an Apache Beam pipeline: the local process pool's shards, from any Beam runner.

    items of the planned shards -> Reshuffle -> process_document (one DoFn; whole-document
    rejections to the tagged output "rejected") -> CoGroupByKey(shard) -> _write_shard
    (embed + ArrayRecord + the shard's JSON) -> ToList -> manifest.json, rejected.jsonl, text bank

The launcher runs `prepare.plan` (validation, listing, shard membership, resume) and the workers
run the local path's own functions on its shards, so a shard holds the same bytes as one written
by `prepare.prepare`. Each element carries its shard and its index there: the writer restores the
item order that fixes record order and rejection order. Rejected documents come back through the
writer into the shard's JSON because rejected.jsonl is rebuilt from the shards' JSONs (a resumed
run lists those of earlier runs too). array_record.beam.WriteToArrayRecord is not used: it names
and fills its shards itself (Beam's file sink), while ours are `{split}-{k}-of-{n}` with planned
members, and come with their JSON.

`--out` must be a path that the launcher and every worker see (a local disk for the
DirectRunner, a shared mount on a cluster): shards are written with os.replace there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import ml_collections as mlc
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from docjepa.data import prepare

NAMESPACE = "docjepa.prepare"  # of the Beam counters
COUNTERS = ("documents_kept", "documents_rejected", "pages_dropped", "documents_truncated", "shards_written")
REJECTED = "rejected"  # the tagged output of whole-document rejections
_KEPT = "kept"

# Text encoders already loaded in this process, by text config: a DoFn running in the launcher's
# process (DirectRunner in_memory) embeds with the one given to prepare_beam instead of loading
# it again; a worker process elsewhere loads its own once per DoFn instance.
_ENCODERS: dict[str, Any] = {}


def pipeline_options(args: Sequence[str]) -> PipelineOptions:
    """Beam pipeline options from command-line style `args`; PrepareError naming the first one
    that no Beam options class knows (Beam itself only logs and drops those)."""
    parsers: list[Any] = []  # the parser of every options class Beam knows
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    _, unknown = parsers[0].parse_known_args(list(args))
    if unknown:
        raise prepare.PrepareError(f"beam pipeline option {unknown[0]!r}: not an option of Apache Beam "
                                   f"{beam.__version__} (see docs/data.md, 'prepare on Apache Beam')")
    return PipelineOptions(list(args))


def _key(text_cfg: dict[str, Any]) -> str:
    return json.dumps(text_cfg, sort_keys=True)


class _Process(beam.DoFn):
    """(shard, index, item) -> (shard, (index, process_document's result)), tagged REJECTED
    when the whole document was rejected."""

    def __init__(self, source: prepare.Source, work_cfg: dict[str, Any]):
        self._source, self._cfg = source, work_cfg
        self._counters = {name: Metrics.counter(NAMESPACE, name) for name in COUNTERS}

    def setup(self) -> None:
        prepare.limit_threads()

    def process(self, element: tuple[str, int, prepare.Item]) -> Iterator[Any]:
        shard, index, item = element
        result = prepare.process_document(self._source, item, self._cfg)
        if "doc" not in result:
            self._counters["documents_rejected"].inc()
            yield beam.pvalue.TaggedOutput(REJECTED, (shard, (index, result)))
            return
        self._counters["documents_kept"].inc()
        self._counters["pages_dropped"].inc(len(result["rejected"]))
        self._counters["documents_truncated"].inc(int(result.get("truncated") is not None))
        yield shard, (index, result)


class _WriteShard(beam.DoFn):
    """(shard, {kept, rejected}) -> the shard's stats, written by prepare._write_shard (with the
    texts' embeddings when `embed`)."""

    def __init__(self, out: str, shards: Sequence[prepare.Shard], text_cfg: dict[str, Any],
                 settings: dict[str, Any], embed: bool):
        self._out, self._settings, self._text_cfg, self._embed = out, settings, text_cfg, embed
        self._shards = {s.name: s for s in shards}
        self._written = Metrics.counter(NAMESPACE, "shards_written")

    def setup(self) -> None:
        self._embedder = (prepare._Embedder(mlc.ConfigDict(self._text_cfg), _ENCODERS.get(_key(self._text_cfg)))
                          if self._embed else None)

    def process(self, element: tuple[str, dict[str, Iterable[tuple[int, dict[str, Any]]]]]) -> Iterator[dict[str, Any]]:
        name, groups = element
        shard = self._shards[name]
        results = sorted([*groups[_KEPT], *groups[REJECTED]], key=lambda r: r[0])
        if [i for i, _ in results] != list(range(len(shard.items))):  # each item exactly once
            raise RuntimeError(f"shard {name}: got items {[i for i, _ in results]} of {len(shard.items)}")
        self._written.inc()
        yield prepare._write_shard(Path(self._out), shard, [r for _, r in results], self._embedder, self._settings)


def _finish(written: list[dict[str, Any]], plan: prepare.Plan, text_cfg: dict[str, Any]) -> int:
    embedder = prepare._Embedder(mlc.ConfigDict(text_cfg), _ENCODERS.get(_key(text_cfg)))
    manifest = prepare.finish(plan, written, embedder)
    return sum(s["documents"] for s in manifest["splits"].values())


def build(root: beam.Pipeline, plan: prepare.Plan, text_cfg: dict[str, Any]) -> beam.PCollection:
    """The prepare transforms of `plan` on `root`; the output is the kept-document count, once
    manifest.json is written."""
    todo = plan.todo
    elements = [(s.name, i, item) for s in todo for i, item in enumerate(s.items)]
    processed = (root
                 | "List" >> beam.Create(elements)
                 | "Spread" >> beam.Reshuffle()
                 | "Process" >> beam.ParDo(_Process(plan.source, plan.work_cfg)).with_outputs(REJECTED, main=_KEPT))
    return ({_KEPT: processed[_KEPT], REJECTED: processed[REJECTED]}
            | "ByShard" >> beam.CoGroupByKey()
            | "Write" >> beam.ParDo(_WriteShard(str(plan.out), todo, text_cfg, plan.settings, plan.embed))
            | "Gather" >> beam.combiners.ToList()
            | "Manifest" >> beam.Map(_finish, plan, text_cfg))


def prepare_beam(cfg: mlc.ConfigDict, out_dir: str, pipeline_args: Sequence[str] = (), *,
                 encoder: Any = None) -> tuple[dict[str, Any], dict[str, int]]:
    """prepare.prepare on the Beam runner that `pipeline_args` choose (`--runner=DirectRunner`,
    ...; config.prepare.workers is not used, the runner's options set the parallelism).
    Returns the manifest and the run's Beam counters (COUNTERS: this run's work only, resumed
    shards excluded).

    `encoder`: a loaded docjepa.text.TextEncoder matching cfg.text, used by DoFns that run in
    this process (DirectRunner in_memory); elsewhere each worker loads its own.
    """
    try:
        root = beam.Pipeline(options=pipeline_options(pipeline_args))
    except ValueError as e:  # an unknown runner: Beam lists the known ones
        raise prepare.PrepareError(f"--runner: {str(e).splitlines()[0]}") from None
    plan = prepare.plan(cfg, out_dir)
    text_cfg = cfg.text.to_dict()
    key = _key(text_cfg)
    if encoder is not None:
        _ENCODERS[key] = encoder
    try:
        with root:
            build(root, plan, text_cfg)
        result = root.result
    finally:
        if encoder is not None:
            _ENCODERS.pop(key, None)
    counters = dict.fromkeys(COUNTERS, 0)
    for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        counters[c.key.metric.name] += c.committed
    return json.loads((plan.out / "manifest.json").read_text()), counters
