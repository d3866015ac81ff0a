"""Derive the bundled latency profiles and pipeline specs from the reference data in ``../shared/data``.

Writes ``<out>/profiles/<task>.csv`` (``variant,batch,cores,latency_s,source,kind``; p99 seconds for one batch
on one replica) for the tasks crop, classification, audio, nlp-qa, nlp-sent, nlp-sum, nlp-li, nlp-trans and
resnet, and ``<out>/pipelines/<name>.yaml`` for IPA's five pipelines (video, audio-qa, audio-sent, sum-qa,
nlp) and InfAdapter's single-stage resnet workload. Every choice and constant is explained in
``rlscale/data/PROVENANCE.md``; this script prints the fitted constants and counts that file quotes.

Method in short:

* measured rows: Sponge's YOLOv5n grid, IPA notebook fragments (``model_latencies_p99`` at load >= 10 RPS and
  a batch that can fill within IPA's 1 s batch window), InfAdapter's ``1 / saturation_tp``; never altered;
* derived rows: a task's reference shape (Sponge's YOLOv5n surface for the CNN tasks, the XLM-R language-id
  surface for the text tasks) times a per-variant scale calibrated on that variant's own fragments, or a
  power law in GFLOPs fitted across the calibrated variants; IPA fragments that report only the mean latency
  become p99 via the median p99/avg ratio of the fragments that report both;
* a repair pass then moves derived rows (never measured ones) until latency is non-decreasing in batch,
  throughput non-decreasing in batch, latency non-increasing in cores without super-linear speed-up, and
  bigger variants no faster.

Core budgets are sized by the runtime's own planner (`rlscale.model.plan_fixed_variants`) on the
profiles as written, so the budget a spec carries is the one its planners and safety layer will find.

Run from the repository root (deterministic; numpy, pyyaml and rlscale itself):

    python -m experiments.data_prep.derive_profiles --shared ../shared/data --out rlscale/data
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import numpy as np
import yaml

from rlscale.model import is_feasible, plan_fixed_variants
from rlscale.spec import MAX_CORE_BUDGET, parse_spec

# ----------------------------------------------------------------------------------------------------------
# Published facts used as inputs (sources in PROVENANCE.md)
# ----------------------------------------------------------------------------------------------------------

#: YOLOv5 README (v6.x table, 640 px): GFLOPs and parameters (M).
YOLO_GFLOPS = {"yolov5n": 4.5, "yolov5s": 16.5, "yolov5m": 49.0, "yolov5l": 109.1, "yolov5x": 205.7}
#: torchvision model docs: GFLOPs (224 px) and parameters (M).
RESNET_GFLOPS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 4.1, "resnet101": 7.8, "resnet152": 11.5}

#: Parameter counts in millions (only used for the start-up delay fit); PROVENANCE marks the estimates.
PARAMS_M = {
    "yolov5n": 1.9,
    "yolov5s": 7.2,
    "yolov5m": 21.2,
    "yolov5l": 46.5,
    "yolov5x": 86.7,
    "resnet18": 11.69,
    "resnet34": 21.80,
    "resnet50": 25.56,
    "resnet101": 44.55,
    "resnet152": 60.19,
    "facebook-s2t-small-librispeech-asr": 31.0,
    "facebook-s2t-medium-librispeech-asr": 71.0,
    "facebook-s2t-large-librispeech-asr": 268.0,
    "deepset-roberta-base-squad2": 124.6,
    "deepset-xlm-roberta-base-squad2": 277.5,
    "distilbert-base-uncased-finetuned-sst-2-english": 67.0,
    "Souvikcmsa-BERT_sentiment_analysis": 109.5,
    "Souvikcmsa-SentimentAnalysisDistillBERT": 67.0,
    "Souvikcmsa-Roberta_Sentiment_Analysis": 124.6,
    "sshleifer-distilbart-xsum-1-1": 82.0,
    "sshleifer-distilbart-xsum-12-1": 222.0,
    "sshleifer-distilbart-xsum-6-6": 230.0,
    "sshleifer-distilbart-xsum-12-3": 255.0,
    "sshleifer-distilbart-xsum-9-6": 268.0,
    "sshleifer-distilbart-xsum-12-6": 306.0,
    "dinalzein-xlm-roberta-base-finetuned-language-identification": 278.0,
    "Helsinki-NLP-opus-mt-fr-en": 75.0,
    "Helsinki-NLP-opus-mt-tc-big-fr-en": 236.0,
}

#: Transformer encoder depth (hidden size 768 for all): compute relative to the 12-layer XLM-R reference.
ENCODER_LAYERS = {
    "deepset-roberta-base-squad2": 12,
    "deepset-xlm-roberta-base-squad2": 12,
    "distilbert-base-uncased-finetuned-sst-2-english": 6,
    "Souvikcmsa-BERT_sentiment_analysis": 12,
    "Souvikcmsa-SentimentAnalysisDistillBERT": 6,
    "Souvikcmsa-Roberta_Sentiment_Analysis": 12,
}
REFERENCE_LAYERS = 12

IPA_MAX_BATCH_TIME_S = 1.0  # max_batch_time in every IPA profiling and run config
MIN_FRAGMENT_LOAD = 10.0  # fragments measured at 1 RPS give a p99 of ~60 samples: not used
PEAK_RPS_IPA = 34.0  # peak of IPA's four damped evaluation windows
BUDGET_HEADROOM = 1.25

# ----------------------------------------------------------------------------------------------------------
# Tasks and pipelines
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    name: str
    node: str | None  # IPA node_name in the fragments
    variants: tuple[str, ...]  # in "no faster than the previous" order for the repair pass
    batches: tuple[int, ...]
    cores: tuple[int, ...]
    metric: str
    run_series: tuple[int, ...] = ()  # IPA profiling series the revised-paper runs used for this node
    profiling_load: float = 20.0
    diminishing_returns: bool = True


CROP = ("yolov5n", "yolov5s", "yolov5m", "yolov5l", "yolov5x")
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
AUDIO = (
    "facebook-s2t-small-librispeech-asr",
    "facebook-s2t-medium-librispeech-asr",
    "facebook-s2t-large-librispeech-asr",
)
QA = ("deepset-roberta-base-squad2", "deepset-xlm-roberta-base-squad2")
SENT = (
    "distilbert-base-uncased-finetuned-sst-2-english",
    "Souvikcmsa-SentimentAnalysisDistillBERT",
    "Souvikcmsa-BERT_sentiment_analysis",
    "Souvikcmsa-Roberta_Sentiment_Analysis",
)
# order by measured mean latency at (b=1, c=2), series 97; 12-3 and 6-6 swap relative to parameter count
SUM = (
    "sshleifer-distilbart-xsum-1-1",
    "sshleifer-distilbart-xsum-12-1",
    "sshleifer-distilbart-xsum-12-3",
    "sshleifer-distilbart-xsum-6-6",
    "sshleifer-distilbart-xsum-9-6",
    "sshleifer-distilbart-xsum-12-6",
)
LI = ("dinalzein-xlm-roberta-base-finetuned-language-identification",)
TRANS = ("Helsinki-NLP-opus-mt-fr-en", "Helsinki-NLP-opus-mt-tc-big-fr-en")

TASKS = {
    t.name: t
    for t in (
        Task("crop", "yolo", CROP, (1, 2, 4, 8), (1, 2, 4, 8), "COCO val mAP@0.5 (%)", (71,)),
        Task("classification", "resnet-human", RESNETS, (1, 2, 4, 8), (1, 2, 4, 8), "ImageNet top-1 (%)", (72,)),
        Task(
            "audio",
            "audio",
            AUDIO,
            (1,),
            (1, 2, 4, 8),
            "LibriSpeech WER (%); accuracy = 1 - WER/100",
            (85, 87),
        ),
        Task("nlp-qa", "nlp-qa", QA, (1,), (1, 2, 4, 8), "SQuAD2 F1 (%)", (86,)),
        Task("nlp-sent", "nlp-sent", SENT, (1,), (1, 2, 4, 8), "accuracy (%)", (88,)),
        Task("nlp-sum", "nlp-sum", SUM, (1,), (1, 2, 4, 8), "ROUGE-L", (97,), 10.0),
        Task("nlp-li", "nlp-li", LI, (1,), (1, 2, 4, 8), "accuracy (%)", (98,)),
        Task("nlp-trans", "nlp-trans", TRANS, (1,), (2, 4, 8, 16), "BLEU", (99,), 10.0),
        Task(
            "resnet",
            None,
            RESNETS,
            (1,),
            tuple(range(2, 21)),
            "ImageNet top-1 (%)",
            diminishing_returns=False,
        ),
    )
}

#: IPA pipelines: (stages in order, notebook row that fixes alpha/beta/gamma/cap/drop/interval, description)
IPA_PIPELINES = {
    "video": (
        ("crop", "classification"),
        ("paper-revision-fig8-e2e-video.ipynb", "1"),
        "object detector (YOLOv5) -> image classifier (ResNet); IPA's video pipeline",
    ),
    "audio-qa": (
        ("audio", "nlp-qa"),
        ("paper-revision-fig9-e2e-audio-qa.ipynb", "21"),
        "speech recognition (S2T) -> question answering (RoBERTa); IPA's audio-qa pipeline",
    ),
    "audio-sent": (
        ("audio", "nlp-sent"),
        ("paper-revision-fig10-e2e-audio-sent.ipynb", "41"),
        "speech recognition (S2T) -> sentiment analysis (BERT family); IPA's audio-sent pipeline",
    ),
    "sum-qa": (
        ("nlp-sum", "nlp-qa"),
        ("paper-revision-fig11-e2e-sum-qa.ipynb", "61"),
        "summarisation (DistilBART) -> question answering (RoBERTa); IPA's sum-qa pipeline",
    ),
    "nlp": (
        ("nlp-li", "nlp-trans", "nlp-sum"),
        ("paper-revision-fig12-e2e-nlp.ipynb", "81"),
        "language identification (XLM-R) -> translation fr-en (Opus-MT) -> summarisation (DistilBART); "
        "IPA's nlp pipeline",
    ),
}

# ----------------------------------------------------------------------------------------------------------
# Profile points
# ----------------------------------------------------------------------------------------------------------

Key = tuple[str, int, int]


@dataclass
class Point:
    latency_s: float
    source: str
    kind: str  # measured | derived

    @property
    def movable(self) -> bool:
        return self.kind == "derived"


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def fnum(raw: str | None) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    return float(raw)


def geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values))))


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def load_sponge(shared: Path) -> dict[tuple[int, int], float]:
    rows = read_csv(shared / "sponge/derived/sponge_latency_grid_b_c.csv")
    return {(int(r["batch_size"]), int(r["cpu_cores"])): float(r["latency_s"]) for r in rows}


@dataclass(frozen=True)
class Fragment:
    series: int
    cell: str
    notebook: str
    node: str
    variant: str
    batch: int
    cores: int
    load: float
    p99: float | None
    avg: float | None

    def tag(self) -> str:
        return f"series {self.series} cell {self.cell} load {self.load:g}"


def full_variant_name(name: str) -> str:
    """Undo the HTML table's truncation (``dinalzein-xlm-roberta-base-finetuned-language-...``)."""
    if not name.endswith("..."):
        return name
    matches = [v for t in TASKS.values() for v in t.variants if v.startswith(name[:-3])]
    assert len(set(matches)) == 1, (name, matches)
    return matches[0]


def load_fragments(shared: Path) -> list[Fragment]:
    out = []
    for r in read_csv(shared / "ipa/derived/ipa_profile_fragments_from_notebook_outputs.csv"):
        if not r["source_notebook"].startswith("ipa/"):
            continue  # the saeid93/sponge motivating-1 table: node 'yolo' with resnet18 rows, no latencies
        out.append(
            Fragment(
                series=int(r["profiling_series"]),
                cell=r["cell_index"],
                notebook=Path(r["source_notebook"]).name,
                node=r["node_name"],
                variant=full_variant_name(r["model_variant"]),
                batch=int(r["max_batch_size"]),
                cores=int(r["cpu_request"]),
                load=float(r["load"]),
                p99=fnum(r["model_latencies_p99"]),
                avg=fnum(r["model_latencies_avg"]),
            )
        )
    return out


def usable(f: Fragment) -> bool:
    """Loaded enough for a meaningful p99, and the batch can fill within IPA's 1 s window."""
    return f.load >= MIN_FRAGMENT_LOAD and f.batch <= f.load * IPA_MAX_BATCH_TIME_S


def p99_over_avg(fragments: list[Fragment]) -> tuple[float, int]:
    """Median p99/avg of usable fragments reporting both, batch <= 8; used to turn means into p99s."""
    ratios = [f.p99 / f.avg for f in fragments if f.p99 and f.avg and usable(f) and f.batch <= 8]
    return float(np.median(ratios)), len(ratios)


def pick_fragments(task: Task, fragments: list[Fragment], field: str) -> dict[Key, Fragment]:
    """Per (variant, batch, cores): the usable fragment with ``field`` set; the runs' series first, then the
    load closest to the task's profiling load, then the higher load; per variant only the runs' series are
    used when that variant has any rows from them."""
    cands = [
        f
        for f in fragments
        if f.node == task.node and f.variant in task.variants and getattr(f, field) is not None and usable(f)
    ]
    chosen: dict[Key, Fragment] = {}
    for v in task.variants:
        mine = [f for f in cands if f.variant == v]
        if any(f.series in task.run_series for f in mine):
            mine = [f for f in mine if f.series in task.run_series]
        for f in sorted(mine, key=lambda f: (abs(f.load - task.profiling_load), -f.load, f.series)):
            chosen.setdefault((v, f.batch, f.cores), f)
    return chosen


# ----------------------------------------------------------------------------------------------------------
# Derivations
# ----------------------------------------------------------------------------------------------------------


def calibrate_scales(
    anchors: dict[str, list[tuple[float, float]]], size: dict[str, float], variants: tuple[str, ...]
) -> tuple[dict[str, float], float]:
    """Scale a_v per variant (latency = a_v * shape(b, c)).

    A variant with anchors gets the geometric mean of anchor / shape. A variant without gets a power law in
    ``size`` (GFLOPs) through its two nearest calibrated neighbours (log-log interpolation); beyond the
    calibrated range, the exponent ``p`` of a least-squares line through all calibrated variants is used.

    Args:
        anchors: variant -> list of (anchor latency, shape value at the anchor's (b, c)).
    Returns:
        (scales, p)
    """
    own = {v: geomean([lat / shp for lat, shp in pts]) for v, pts in anchors.items() if pts}
    known = sorted(own, key=lambda v: size[v])
    p = float(np.polyfit(np.log([size[v] for v in known]), np.log([own[v] for v in known]), 1)[0])
    scales = {}
    for v in variants:
        if v in own:
            scales[v] = own[v]
            continue
        below = [u for u in known if size[u] <= size[v]]
        above = [u for u in known if size[u] > size[v]]
        if below and above:
            lo, hi = below[-1], above[0]
            exp = math.log(own[hi] / own[lo]) / math.log(size[hi] / size[lo])
        else:
            lo, exp = (below[-1] if below else above[0]), p
        scales[v] = own[lo] * (size[v] / size[lo]) ** exp
    return scales, p


def repair(points: dict[Key, Point], task: Task, sweeps: int = 5000) -> tuple[int, list[str]]:
    """Move derived points (in log space) until the monotonicity constraints hold; measured points stay.

    Constraints, each ``x_p <= x_q + w`` with ``x = log latency``:
      latency non-decreasing in batch; throughput b/l non-decreasing in batch; latency non-increasing in
      cores; no super-linear speed-up in cores (c*l non-decreasing; skipped for the resnet task); in each
      (batch, cores) a variant is no faster than the one before it in ``task.variants``.
    Returns the number of derived points changed by more than 0.1% and the violations left among
    measured points (reported, never fixed).
    """
    cons: list[tuple[Key, Key, float, str]] = []
    for v in task.variants:
        keys = [k for k in points if k[0] == v]
        for c in sorted({k[2] for k in keys}):
            bs = sorted(k[1] for k in keys if k[2] == c)
            for b0, b1 in zip(bs, bs[1:], strict=False):
                cons.append(((v, b0, c), (v, b1, c), 0.0, "latency non-decreasing in batch"))
                cons.append(((v, b1, c), (v, b0, c), math.log(b1 / b0), "throughput non-decreasing in batch"))
        for b in sorted({k[1] for k in keys}):
            cs = sorted(k[2] for k in keys if k[1] == b)
            for c0, c1 in zip(cs, cs[1:], strict=False):
                cons.append(((v, b, c1), (v, b, c0), 0.0, "latency non-increasing in cores"))
                if task.diminishing_returns:
                    cons.append(((v, b, c0), (v, b, c1), math.log(c1 / c0), "no super-linear speed-up"))
    for small, big in zip(task.variants, task.variants[1:], strict=False):
        for k in points:
            if k[0] == small and (big, k[1], k[2]) in points:
                cons.append((k, (big, k[1], k[2]), 0.0, f"{big} no faster than {small}"))

    x = {k: math.log(p.latency_s) for k, p in points.items()}
    start = dict(x)
    for _ in range(sweeps):
        worst = 0.0
        for p, q, w, _why in cons:
            viol = x[p] - x[q] - w
            if viol <= 1e-12:
                continue
            mp, mq = points[p].movable, points[q].movable
            if mp and mq:
                x[p] -= viol / 2
                x[q] += viol / 2
            elif mp:
                x[p] -= viol
            elif mq:
                x[q] += viol
            else:
                continue
            worst = max(worst, viol)
        if worst < 1e-10:
            break
    changed = 0
    for k, pt in points.items():
        if abs(x[k] - start[k]) > math.log(1.001):
            changed += 1
            pt.source += " +monotone-repair"
        pt.latency_s = math.exp(x[k])
    left = []
    for p, q, w, why in cons:
        viol = x[p] - x[q] - w
        if viol > 1e-9:
            left.append(
                f"{task.name}: {why}: {p[0]} b{p[1]} c{p[2]} vs b{q[1]} c{q[2]} ({q[0]}) "
                f"by {100 * (math.exp(viol) - 1):.2f}% [{points[p].kind}/{points[q].kind}]"
            )
    return changed, left


def build_profiles(shared: Path) -> tuple[dict[str, dict[Key, Point]], dict[str, object]]:
    sponge = load_sponge(shared)
    frags = load_fragments(shared)
    k_avg, n_ratio = p99_over_avg(frags)
    info: dict[str, object] = {"k_p99_over_avg": k_avg, "k_ratio_count": n_ratio}
    out: dict[str, dict[Key, Point]] = {}

    shape_cnn = {bc: lat / sponge[(1, 1)] for bc, lat in sponge.items()}

    def measured_from(task: Task, pts: dict[Key, Point], skip: tuple[str, ...] = ()) -> dict[Key, Fragment]:
        chosen = pick_fragments(task, frags, "p99")
        for key, f in chosen.items():
            if key not in pts and key[0] not in skip:
                pts[key] = Point(f.p99, f"ipa:fragment {f.tag()}", "measured")
        return chosen

    def soft_from(task: Task, pts: dict[Key, Point], variants: tuple[str, ...]) -> dict[Key, float]:
        """Mean-only fragments -> p99 via k; returns key -> value (not yet added)."""
        out_soft = {}
        for key, f in pick_fragments(task, frags, "avg").items():
            if key[0] in variants and key not in pts:
                out_soft[key] = f.avg * k_avg
        return out_soft

    def soft_tag(task: Task, key: Key) -> str:
        f = pick_fragments(task, frags, "avg")[key]
        return f"derived:ipa-avg x k fragment {f.tag()}"

    # ---- crop: Sponge's YOLOv5n grid; other variants = Sponge shape x scale(GFLOPs) ---------------------
    task = TASKS["crop"]
    pts: dict[Key, Point] = {}
    for (b, c), lat in sorted(sponge.items()):
        pts[("yolov5n", b, c)] = Point(lat, "sponge:algorithms.ipynb grid", "measured")
    measured_from(task, pts, skip=("yolov5n",))  # Sponge's grid is yolov5n's source (other hardware)
    soft = soft_from(task, pts, ("yolov5x",))
    anchors: dict[str, list[tuple[float, float]]] = {v: [] for v in CROP}
    for (v, b, c), p in pts.items():
        if (b, c) in shape_cnn:
            anchors[v].append((p.latency_s, shape_cnn[(b, c)]))
    for (v, b, c), lat in soft.items():
        anchors[v].append((lat, shape_cnn[(b, c)]))
    scales, p_crop = calibrate_scales(anchors, YOLO_GFLOPS, CROP)
    info["crop"] = {"p": p_crop, "scales": scales, "anchored": sorted(v for v in CROP if anchors[v])}
    for v, b, c in product(CROP, task.batches, task.cores):
        if (v, b, c) in pts:
            continue
        if (v, b, c) in soft:
            pts[(v, b, c)] = Point(soft[(v, b, c)], soft_tag(task, (v, b, c)), "derived")
        else:
            pts[(v, b, c)] = Point(
                scales[v] * shape_cnn[(b, c)],
                f"derived:flops-interp x yolov5n grid (a={scales[v]:.4g})",
                "derived",
            )
    out["crop"] = pts

    # ---- classification: same CNN shape; scales from IPA ResNet fragments, power law in GFLOPs ------------
    task = TASKS["classification"]
    pts = {}
    measured_from(task, pts)
    anchors = {v: [] for v in RESNETS}
    for (v, b, c), p in pts.items():
        if (b, c) in shape_cnn:
            anchors[v].append((p.latency_s, shape_cnn[(b, c)]))
    scales, p_cls = calibrate_scales(anchors, RESNET_GFLOPS, RESNETS)
    info["classification"] = {
        "p": p_cls,
        "scales": scales,
        "anchored": sorted(v for v in RESNETS if anchors[v]),
    }
    for v, b, c in product(RESNETS, task.batches, task.cores):
        if (v, b, c) not in pts:
            tag = "flops-interp" if anchors[v] == [] else "own-fragment scale"
            pts[(v, b, c)] = Point(
                scales[v] * shape_cnn[(b, c)],
                f"derived:{tag} x yolov5n grid shape (a={scales[v]:.4g})",
                "derived",
            )
    out["classification"] = pts

    # ---- audio: all measured (series 85) ----------------------------------------------------------------
    task = TASKS["audio"]
    pts = {}
    measured_from(task, pts)
    out["audio"] = pts

    # ---- nlp-li: mean-only grid (series 98) x k -----------------------------------------------------------
    task = TASKS["nlp-li"]
    li = LI[0]
    pts = {}
    li_soft = soft_from(task, pts, LI)
    for key in sorted(li_soft):
        pts[key] = Point(li_soft[key], soft_tag(task, key), "derived")
    out["nlp-li"] = pts
    li_b1 = {c: li_soft[(li, 1, c)] for (_v, b, c) in li_soft if b == 1}
    info["li_core_shape"] = {c: li_b1[c] / li_b1[4] for c in sorted(li_b1)}

    def li_shape(c: int, ref: int) -> float:
        return li_b1[c] / li_b1[ref]

    # ---- nlp-qa: XLM-R QA measured at 4 cores; other cores by the XLM-R language-id core shape ------------
    task = TASKS["nlp-qa"]
    pts = {}
    measured_from(task, pts)
    xlm = "deepset-xlm-roberta-base-squad2"
    ref = pts[(xlm, 1, 4)].latency_s
    for c in task.cores:
        if (xlm, 1, c) not in pts:
            pts[(xlm, 1, c)] = Point(ref * li_shape(c, 4), "derived:ipa series 86 b1 c4 x nlp-li core shape", "derived")
    for c in task.cores:
        ratio = ENCODER_LAYERS["deepset-roberta-base-squad2"] / ENCODER_LAYERS[xlm]
        pts[("deepset-roberta-base-squad2", 1, c)] = Point(
            pts[(xlm, 1, c)].latency_s * ratio,
            "derived:same encoder as xlm-roberta-base-squad2 (12x768) x1.0",
            "derived",
        )
    out["nlp-qa"] = pts

    # ---- nlp-sent: XLM-R language-id surface (p99) x (encoder layers / 12)^p ------------------------------
    task = TASKS["nlp-sent"]
    p_text = (p_crop + p_cls) / 2
    info["p_text"] = p_text
    pts = {}
    for v, c in product(SENT, task.cores):
        f = (ENCODER_LAYERS[v] / REFERENCE_LAYERS) ** p_text
        pts[(v, 1, c)] = Point(li_b1[c] * f, f"derived:nlp-li p99 surface x (layers/12)^p ({f:.3f})", "derived")
    out["nlp-sent"] = pts

    # ---- nlp-sum: series 97 mean at (1, 2) x k, other cores by the nlp-li core shape ----------------------
    task = TASKS["nlp-sum"]
    pts = {}
    sum_soft = soft_from(task, pts, SUM)
    for v in SUM:
        base = sum_soft[(v, 1, 2)]
        for c in task.cores:
            src = soft_tag(task, (v, 1, 2))
            if c != 2:
                src += " x nlp-li core shape"
            pts[(v, 1, c)] = Point(base * li_shape(c, 2), src, "derived")
    out["nlp-sum"] = pts

    # ---- nlp-trans: series 99 means x k on its whole grid -------------------------------------------------
    task = TASKS["nlp-trans"]
    pts = {}
    for key, lat in sorted(soft_from(task, pts, TRANS).items()):
        pts[key] = Point(lat, soft_tag(task, key), "derived")
    out["nlp-trans"] = pts

    # ---- resnet (InfAdapter): latency = 1 / saturation_tp, SLO-750 rows ----------------------------------
    pts = {}
    for r in read_csv(shared / "infadapter/capacity_result_Feb_21.csv"):
        if r["SLA"] != "750" or r["BATCH"] != "1":
            continue
        v = f"resnet{r['ARCH']}"
        pts[(v, 1, int(r["CPU"]))] = Point(
            1.0 / float(r["saturation_tp"]), "infadapter:capacity_result_Feb_21 saturation_tp", "measured"
        )
    out["resnet"] = pts
    return out, info


# ----------------------------------------------------------------------------------------------------------
# Pipelines
# ----------------------------------------------------------------------------------------------------------


def load_accuracies(shared: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(task, variant) -> (accuracy in [0, 1], published metric value)."""
    acc = {}
    for r in read_csv(shared / "ipa/derived/ipa_accuracies_flat.csv"):
        value = float(r["accuracy_value"])
        if r["task"] == "audio":
            wer = -value  # IPA stores negated WER
            acc[(r["task"], r["variant"])] = (round(1.0 - wer / 100.0, 6), wer)
        else:
            acc[(r["task"], r["variant"])] = (round(value / 100.0, 6), value)
    return acc


def startup_fit(shared: Path) -> tuple[dict[str, float], dict[str, float]]:
    const = json.loads((shared / "infadapter/derived/variant_and_adapter_constants.json").read_text())
    load = {f"resnet{k}": float(v) for k, v in const["load_times_s"].items()}
    x = np.array([PARAMS_M[v] for v in RESNETS])
    y = np.array([load[v] for v in RESNETS])
    slope, intercept = np.polyfit(x, y, 1)
    lo, hi = float(min(y)), float(2 * max(y))
    startup = {}
    for v, m in PARAMS_M.items():
        startup[v] = load[v] if v in load else round(float(min(hi, max(lo, intercept + slope * m))), 2)
    return startup, {"slope_s_per_Mparam": float(slope), "intercept_s": float(intercept), "lo": lo, "hi": hi}


def ipa_row(shared: Path, notebook: str, series: str) -> dict[str, str]:
    for r in read_csv(shared / "ipa/derived/ipa_experiment_configs_from_notebooks.csv"):
        if r["source_notebook"] == notebook and r["series"] == series:
            return r
    raise SystemExit(f"no IPA config row {notebook} series {series}")


def min_cores(
    spec: dict, profiles_dir: Path, variants: list[str], load_rps: float
) -> tuple[int, list[tuple[str, int, int, int]]]:
    """Fewest total cores serving ``load_rps`` with the given variant per stage within the SLA, by the planner
    every policy uses (`rlscale.model.plan_fixed_variants`: IPA's stage latency ``l + (b - 1) / load``,
    replicas ``ceil(load * rho_max / (b / l))`` up to ``max_replicas``) on the spec as it will be written and its
    profiles as written to ``profiles_dir``, without a budget (the budget is what this sizes).

    Returns:
        (total cores, the plan as ``(variant, batch, cores, replicas)`` per stage).
    """
    raw = copy.deepcopy(spec)
    raw["core_budget"] = MAX_CORE_BUDGET
    for stage in raw["stages"]:
        stage["profile"] = str((profiles_dir / f"{stage['task']}.csv").resolve())
    parsed = parse_spec(raw, profiles_dir / f"{spec['name']}.yaml")
    config = plan_fixed_variants(parsed, variants, load_rps)
    if not is_feasible(parsed, config, load_rps):  # the planner falls back to the fastest; a budget must not
        raise SystemExit(f"{spec['name']}: {'/'.join(variants)} cannot serve {load_rps:g} rps within the SLA")
    return config.total_cores, [(sc.variant, sc.batch, sc.cores, sc.replicas) for sc in config.stages]


def build_pipelines(shared: Path, profiles_dir: Path) -> tuple[dict[str, dict], dict[str, object]]:
    """The bundled pipeline specs (IPA's five and InfAdapter's resnet), budgets sized on the profiles already
    written to ``profiles_dir``; and what `main` prints about them."""
    acc = load_accuracies(shared)
    startup, fit = startup_fit(shared)
    slas = json.loads((shared / "ipa/derived/ipa_slas_and_ablation_from_notebooks.json").read_text())
    slas = slas["e2e_sla_vertical_lines_fig15"]
    info: dict[str, object] = {"startup_fit": fit, "startup": startup, "budgets": {}}
    specs = {}
    for name, (stage_tasks, (nb, series), desc) in IPA_PIPELINES.items():
        row = ipa_row(shared, nb, series)
        assert row["pipeline_name"] == name and row["baseline_mode"] == "", row
        cap = int(row["batching_cap"])
        batches = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= cap]
        stages = []
        best = []
        for t in stage_tasks:
            task = TASKS[t]
            assert list(task.batches) == batches, (name, t)
            variants = [v for v in task.variants if (t, v) in acc]
            order = [r["variant"] for r in read_csv(shared / "ipa/derived/ipa_accuracies_flat.csv")]
            variants.sort(key=order.index)
            stages.append(
                {
                    "name": t,
                    "task": t,
                    "metric": task.metric,
                    "batch_sizes": batches,
                    "cores": list(task.cores),
                    "min_replicas": 1,
                    "max_replicas": 30,
                    "variants": [
                        {
                            "name": v,
                            "accuracy": acc[(t, v)][0],
                            "metric_value": acc[(t, v)][1],
                            "startup_s": startup[v],
                        }
                        for v in variants
                    ],
                }
            )
            best.append(max(variants, key=lambda v, t=t: acc[(t, v)][0]))
        spec = {
            "name": name,
            "description": desc,
            "sla_s": float(slas[name]),
            "drop_limit_s": float(row["drop_limit"]),
            "interval_s": float(row["adaptation_interval"]),
            "batch_timeout_s": IPA_MAX_BATCH_TIME_S,
            "core_budget": 0,  # sized below, once the rest of the spec is known
            "objective": {
                "alpha": float(row["alpha"]),
                "beta": float(row["beta"]),
                "gamma": float(row["gamma"]),
                "accuracy_method": {"multiply": "product", "sum": "sum"}[row["accuracy_method"]],
            },
            "stages": stages,
        }
        need, plan = min_cores(spec, profiles_dir, best, PEAK_RPS_IPA)
        spec["core_budget"] = int(math.ceil(BUDGET_HEADROOM * need / 8) * 8)
        info["budgets"][name] = {"min_cores_at_peak": need, "plan": plan, "core_budget": spec["core_budget"]}
        specs[name] = spec

    const = json.loads((shared / "infadapter/derived/variant_and_adapter_constants.json").read_text())
    task = TASKS["resnet"]
    assert task.cores[0] == const["min_cpu_per_variant"] and task.cores[-1] == const["max_cpu"]
    specs["resnet"] = {
        "name": "resnet",
        "description": "single-stage ResNet image classifier (TF Serving, CPU); InfAdapter's workload",
        "sla_s": const["latency_slo_ms"] / 1000.0,
        "drop_limit_s": 2 * const["latency_slo_ms"] / 1000.0,
        "interval_s": float(const["decision_interval_s"]),
        "batch_timeout_s": 0.0,
        "core_budget": int(const["max_cpu"]),
        "objective": {
            "alpha": float(const["alpha"]),
            "beta": float(const["beta"]),
            "gamma": 0.0,
            "accuracy_method": "product",
        },
        "stages": [
            {
                "name": "resnet",
                "task": "resnet",
                "metric": task.metric,
                "batch_sizes": [1],
                "cores": list(task.cores),
                "min_replicas": 1,
                "max_replicas": int(const["max_cpu"]) // int(const["min_cpu_per_variant"]),
                "variants": [
                    {
                        "name": f"resnet{k}",
                        "accuracy": float(a),
                        "metric_value": round(100 * float(a), 3),
                        "startup_s": startup[f"resnet{k}"],
                    }
                    for k, a in const["baseline_accuracies_top1_fraction"].items()
                ],
            }
        ],
    }
    # InfAdapter's benchmark: the same ResNets served as a mix of up to five variant pools, each one replica (one
    # TF-Serving pod per variant) of 2..20 cores, InfAdapter's objective in the spec's form (PROVENANCE.md)
    specs["infadapter"] = copy.deepcopy(specs["resnet"])
    specs["infadapter"].update(
        name="infadapter",
        description="InfAdapter's benchmark: one ResNet stage served by a mix of variants (one pod each), 20 cores",
        objective={
            "alpha": 1.0,
            "beta": float(const["alpha"]) / int(const["max_cpu"]),
            "gamma": 0.0,
            "accuracy_method": "product",
        },
    )
    stage = specs["infadapter"]["stages"][0]
    stage.update(max_replicas=1, max_pools=len(const["model_versions"]))
    # its VPA baseline: the recommender applied by InfAdapter's adapter, from its initial state (ResNet152, 20 cores)
    ((start_variant, start_cores),) = const["initial_state"].items()
    specs["infadapter"]["vpa"] = {
        "updater": "infadapter",
        "variant": [f"resnet{start_variant}"],
        "cores": [int(start_cores)],
    }
    return specs, info


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------


def write_infadapter_capacity(shared: Path, path: Path) -> int:
    """InfAdapter's measured capacities (the highest Poisson rate whose p99 meets the 750 ms SLO, one TF-Serving
    replica with CPU cores, ResNet at batch 1) as ``variant,cores,capacity_rps,source``: what its capacity lines
    are fitted to (`ilp_baseline.infadapter`). Returns the rows written."""
    rows = []
    for r in read_csv(shared / "infadapter/capacity_result_Feb_21.csv"):
        if r["SLA"] == "750" and r["BATCH"] == "1":
            rows.append((f"resnet{r['ARCH']}", int(r["CPU"]), int(float(r["capacity"]))))
    order = {f"resnet{k}": i for i, k in enumerate((18, 34, 50, 101, 152))}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["variant", "cores", "capacity_rps", "source"])
        for v, c, cap in sorted(rows, key=lambda x: (order[x[0]], x[1])):
            w.writerow([v, c, cap, "infadapter:capacity_result_Feb_21 capacity (SLA 750)"])
    return len(rows)


def write_profile(path: Path, task: Task, pts: dict[Key, Point]) -> None:
    order = {v: i for i, v in enumerate(task.variants)}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["variant", "batch", "cores", "latency_s", "source", "kind"])
        for (v, b, c), p in sorted(pts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], kv[0][2])):
            w.writerow([v, b, c, f"{p.latency_s:.7g}", p.source, p.kind])


class _SpecDumper(yaml.SafeDumper):
    """Block-style mappings, one-line lists of scalars, no anchors/aliases."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(x, int | float | str) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_SpecDumper.add_representer(list, _represent_list)


def write_spec(path: Path, spec: dict, script: str = "experiments/data_prep/derive_profiles.py") -> None:
    header = f"# generated by {script}; sources: rlscale/data/PROVENANCE.md\n"
    body = yaml.dump(spec, Dumper=_SpecDumper, sort_keys=False, default_flow_style=False, width=110)
    path.write_text(header + body, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"), help="reference data folder")
    parser.add_argument("--out", type=Path, default=Path("rlscale/data"), help="bundled data folder")
    args = parser.parse_args(argv)

    profiles, info = build_profiles(args.shared)
    (args.out / "profiles").mkdir(parents=True, exist_ok=True)
    (args.out / "pipelines").mkdir(parents=True, exist_ok=True)
    leftovers: list[str] = []
    for name, pts in profiles.items():
        task = TASKS[name]
        missing = [k for k in product(task.variants, task.batches, task.cores) if k not in pts]
        assert not missing, (name, missing[:5])
        changed, left = repair(pts, task)
        leftovers += left
        write_profile(args.out / "profiles" / f"{name}.csv", task, pts)
        n_meas = sum(p.kind == "measured" for p in pts.values())
        n_der = len(pts) - n_meas
        print(f"{name:15s} rows {len(pts):4d}  measured {n_meas:4d}  derived {n_der:4d}  repaired {changed}")
        for v in task.variants:
            vm = sum(1 for k, p in pts.items() if k[0] == v and p.kind == "measured")
            vd = sum(1 for k, p in pts.items() if k[0] == v and p.kind == "derived")
            print(f"    {v:62s} measured {vm:3d} derived {vd:3d}")

    n_cap = write_infadapter_capacity(args.shared, args.out / "infadapter_capacity.csv")
    print(f"infadapter_capacity.csv rows {n_cap}")
    specs, pinfo = build_pipelines(args.shared, args.out / "profiles")
    for name, spec in specs.items():
        write_spec(args.out / "pipelines" / f"{name}.yaml", spec)

    print(f"k (p99/avg) = {info['k_p99_over_avg']:.4f} from {info['k_ratio_count']} fragments")
    for t in ("crop", "classification"):
        d = info[t]
        print(f"{t}: p = {d['p']:.4f}; anchored {d['anchored']}")
        print("    scales " + ", ".join(f"{v}={a:.5g}" for v, a in d["scales"].items()))
    print(f"p_text = {info['p_text']:.4f}")
    print("nlp-li core shape (b=1, /c4): " + ", ".join(f"c{c}={r:.4f}" for c, r in info["li_core_shape"].items()))
    fit = pinfo["startup_fit"]
    print(
        f"startup fit: {fit['intercept_s']:.4f} s + {fit['slope_s_per_Mparam']:.5f} s/M params, "
        f"clamped to [{fit['lo']:.2f}, {fit['hi']:.2f}]"
    )
    print("    " + ", ".join(f"{v}={s}" for v, s in pinfo["startup"].items()))
    for name, b in pinfo["budgets"].items():
        print(
            f"budget {name}: min cores at {PEAK_RPS_IPA:g} RPS = {b['min_cores_at_peak']} -> "
            f"{b['core_budget']}  plan {b['plan']}"
        )
    print(f"constraint violations left ({len(leftovers)}):")
    for line in leftovers:
        print("    " + line)


if __name__ == "__main__":
    main()
