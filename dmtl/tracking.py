"""Following faces across a video's frames: the IoU tracker of Bochinski, Eiselein & Sikora, "High-speed
tracking-by-detection without using image information" (AVSS 2017): each new detection joins the live track whose
last box overlaps it most (IoU >= ``threshold``, greedily, best pairs first), else starts a new track; a track not
seen for ``max_age`` frames ends. ``predict`` gives every video row its track id."""
from __future__ import annotations


def iou(a, b) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


class IoUTracker:
    """Track ids for the faces of successive frames of one video."""

    def __init__(self, threshold: float = 0.3, max_age: int = 5):
        self.threshold, self.max_age = float(threshold), int(max_age)
        self.tracks: dict[int, tuple] = {}  # id -> (last box, frame it was seen)
        self.next_id = 0

    def update(self, boxes, frame: int) -> list[int]:
        """The track id of each box of ``frame`` (frames in increasing order)."""
        self.tracks = {t: (box, seen) for t, (box, seen) in self.tracks.items() if frame - seen <= self.max_age}
        pairs = sorted(((iou(box, last), i, t) for i, box in enumerate(boxes) for t, (last, _) in self.tracks.items()),
                       reverse=True)
        ids: list = [None] * len(boxes)
        taken = set()
        for overlap, i, t in pairs:
            if overlap < self.threshold:
                break
            if ids[i] is None and t not in taken:
                ids[i], taken = t, taken | {t}
        for i, box in enumerate(boxes):
            if ids[i] is None:
                ids[i], self.next_id = self.next_id, self.next_id + 1
            self.tracks[ids[i]] = (tuple(box), frame)
        return ids
