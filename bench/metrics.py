"""Copy-detection metrics over a stream, in the style of DISC21's micro-AP.

Definitions (the same for every method, so numbers in one table compare):

- Every file after the first is a query against the files EARLIER in the stream. A method yields at
  most one prediction per query: (query, matched earlier file, score), higher score = closer. A method
  that abstains (dupwatch's verdict `new`) yields no prediction for that query.
- A prediction is correct iff the matched file derives from the same original as the query (the
  original itself or another edit of it). Predictions on originals and distractors are always wrong:
  they have no earlier copy.
- Positives are the edit files: each has its original earlier in the stream, so recall is over them.
- Sweeping a threshold t over the scores gives, for "score >= t", precision = correct / predicted and
  recall = correct / positives. Tied scores enter together (one point per distinct score), so the
  result does not depend on the order of ties. micro-AP = sum over points of (recall step) x precision.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True)
class Prediction:
    """A method's best earlier match for one query file."""

    query: str
    match: str
    score: float


@dataclass(frozen=True)
class PRPoint:
    """Precision and recall when accepting every prediction with score >= threshold."""

    threshold: float
    precision: float
    recall: float


def is_correct(prediction: Prediction, groups: dict[str, str]) -> bool:
    """Correct iff both files derive from the same original; a match outside the data set is wrong."""
    return groups.get(prediction.match) == groups[prediction.query]


def pr_curve(predictions: Iterable[Prediction], groups: dict[str, str], positives: int) -> list[PRPoint]:
    """One point per distinct score, from the highest score down."""
    by_score: dict[float, list[bool]] = {}
    for prediction in predictions:
        by_score.setdefault(prediction.score, []).append(is_correct(prediction, groups))
    points, correct, predicted = [], 0, 0
    for score in sorted(by_score, reverse=True):
        correct += sum(by_score[score])
        predicted += len(by_score[score])
        points.append(PRPoint(score, correct / predicted, correct / positives if positives else 0.0))
    return points


def average_precision(points: list[PRPoint]) -> float:
    """micro-AP: area under the step-wise precision-recall curve (no interpolation)."""
    area, previous_recall = 0.0, 0.0
    for point in points:
        area += (point.recall - previous_recall) * point.precision
        previous_recall = point.recall
    return area


def recall_at_precision(points: list[PRPoint], precision: float) -> tuple[float, float | None]:
    """Highest recall among thresholds whose precision is at least `precision`, with the highest
    threshold that reaches it; (0, None) when no threshold is that precise."""
    best: tuple[float, float | None] = (0.0, None)
    for point in points:
        if point.precision >= precision and point.recall > best[0]:
            best = (point.recall, point.threshold)
    return best


def recall_by_family(predictions: Iterable[Prediction], groups: dict[str, str],
                     families: dict[str, str], threshold: float | None) -> dict[str, float]:
    """Per edit family: share of its edits correctly matched with score >= threshold.

    `families` maps each positive (edit) file to its family; a None threshold (no operating point
    reached the precision) gives 0 for every family.
    """
    found: dict[str, int] = {family: 0 for family in families.values()}
    if threshold is not None:
        for prediction in predictions:
            if prediction.query in families and prediction.score >= threshold \
                    and is_correct(prediction, groups):
                found[families[prediction.query]] += 1
    totals: dict[str, int] = {}
    for family in families.values():
        totals[family] = totals.get(family, 0) + 1
    return {family: found[family] / totals[family] for family in sorted(totals)}


def precision_recall_at(predictions: Iterable[Prediction], groups: dict[str, str], positives: int,
                        threshold: float) -> tuple[float, float]:
    """(precision, recall) when accepting predictions with score >= threshold (a default setting)."""
    accepted = [is_correct(p, groups) for p in predictions if p.score >= threshold]
    correct = sum(accepted)
    precision = correct / len(accepted) if accepted else 1.0
    return precision, correct / positives if positives else 0.0


def merge_groups(groups: Iterable[Iterable[str]]) -> list[list[str]]:
    """Connected components of groups that share members (union-find), each sorted, singletons
    dropped: matches chain (a~b, b~c), and a user sees a, b and c as one duplicate group."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for group in groups:
        members = list(group)
        for member in members:
            parent[find(member)] = find(members[0])
    components: dict[str, list[str]] = {}
    for member in parent:
        components.setdefault(find(member), []).append(member)
    return sorted(sorted(c) for c in components.values() if len(c) > 1)


def group_pairs(groups: Iterable[Iterable[str]]) -> set[frozenset[str]]:
    """Every unordered pair of files inside each group."""
    return {frozenset(pair) for group in groups for pair in combinations(sorted(group), 2)}


def pair_precision_recall(predicted: set[frozenset[str]], truth: set[frozenset[str]]) -> tuple[float, float]:
    """Pair precision and recall of duplicate groups: of the pairs a method puts in one group, the
    share that derive from one original; of those true pairs, the share it grouped. An empty
    prediction has precision 1 (it claimed nothing wrong)."""
    correct = len(predicted & truth)
    return (correct / len(predicted) if predicted else 1.0, correct / len(truth) if truth else 0.0)


def normalised_box(box: list[float], size: tuple[int, int]) -> list[float]:
    """A pixel box `[x0, y0, x1, y1]` of an image of `size`, in 0-1 coordinates (as the `edit` object gives boxes)."""
    return [box[0] / size[0], box[1] / size[1], box[2] / size[0], box[3] / size[1]]


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two boxes `[x0, y0, x1, y1]`."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def coverage(target: list[float], boxes: list[list[float]], grid: int = 200) -> float:
    """Share of `target` covered by the union of `boxes` (all normalised), on a raster."""
    import numpy as np

    covered = np.zeros((grid, grid), bool)
    for x0, y0, x1, y1 in boxes:
        covered[int(y0 * grid):int(np.ceil(y1 * grid)), int(x0 * grid):int(np.ceil(x1 * grid))] = True
    x0, y0, x1, y1 = target
    part = covered[int(y0 * grid):int(np.ceil(y1 * grid)), int(x0 * grid):int(np.ceil(x1 * grid))]
    return float(part.mean()) if part.size else 0.0
