"""Evaluation metrics on synthetic cases whose answers are computed by hand (comments).

Pure functions: no models, no ROS. What this does not check: that the labels of the
committed set are right (test_eval_datasets checks their consistency) or any model."""

import pytest

from mr_mllm_ros.eval.metrics import (AlertFrame, Obj, ReferringOutcome, alert_events,
                                      alert_scores, canonical_class, class_in_phrase,
                                      coco_map, iou, phrase_class_agreement,
                                      precision_recall, referring_scores)

approx = pytest.approx

# Two images, four objects of three classes.
A = (0, 0, 100, 100)        # person, image a
B = (200, 200, 300, 300)    # car, image a
C = (50, 50, 150, 250)      # person, image b
D = (300, 0, 400, 80)       # dog, image b
GT = [Obj('a', 'person', A), Obj('a', 'car', B), Obj('b', 'person', C), Obj('b', 'dog', D)]
IMAGES = ['a', 'b']


def test_iou_hand_values():
    assert iou(A, A) == 1.0
    assert iou(A, (200, 200, 300, 300)) == 0.0
    # (0,0,100,100) vs (50,0,150,100): intersection 50*100 = 5000, union 15000.
    assert iou(A, (50, 0, 150, 100)) == approx(1 / 3)


def test_perfect_predictions_score_one_everywhere():
    preds = [Obj(g.image, g.class_name, g.box, 0.9) for g in GT]
    pr = precision_recall(GT, preds)
    assert pr['mean_precision'] == 1.0 and pr['mean_recall'] == 1.0
    assert pr['micro_precision'] == 1.0 and pr['micro_recall'] == 1.0
    assert (pr['tp'], pr['fp'], pr['fn']) == (4, 0, 0)
    assert all(v['precision'] == 1.0 and v['recall'] == 1.0 for v in pr['per_class'].values())
    m = coco_map(IMAGES, GT, preds)
    assert m['map'] == approx(1.0) and m['ap50'] == approx(1.0) and m['ap75'] == approx(1.0)
    assert all(v == approx(1.0) for v in m['per_class'].values())


def test_all_wrong_predictions_score_zero():
    preds = [Obj('a', 'dog', A, 0.9),                       # right place, wrong class
             Obj('a', 'person', (400, 400, 500, 500), 0.8),  # right class, wrong place
             Obj('b', 'car', C, 0.7)]                        # wrong class
    pr = precision_recall(GT, preds)
    # person: 1 FP, 2 FN; car: 1 FP, 1 FN; dog: 1 FP, 1 FN -> every P and R is 0.
    assert pr['mean_precision'] == 0.0 and pr['mean_recall'] == 0.0
    assert pr['micro_precision'] == 0.0 and pr['micro_recall'] == 0.0
    assert (pr['tp'], pr['fp'], pr['fn']) == (0, 3, 4)
    m = coco_map(IMAGES, GT, preds)
    assert m['map'] == 0.0 and m['ap50'] == 0.0
    assert coco_map(IMAGES, GT, [])['map'] == 0.0  # no predictions at all


def test_half_found_with_one_false_positive_matches_hand_computation():
    # Found: person A and dog D (exact boxes). Missed: car B and person C.
    # False positive: a car at (200,200,240,240): IoU with B = 40*40 / 100*100 = 0.16.
    preds = [Obj('a', 'person', A, 0.9), Obj('b', 'dog', D, 0.8),
             Obj('a', 'car', (200, 200, 240, 240), 0.7)]
    pr = precision_recall(GT, preds)
    pc = pr['per_class']
    # person: TP 1, FP 0, FN 1 -> P 1, R 1/2;  car: TP 0, FP 1, FN 1 -> P 0, R 0;
    # dog: TP 1, FP 0, FN 0 -> P 1, R 1.
    assert (pc['person']['tp'], pc['person']['fp'], pc['person']['fn']) == (1, 0, 1)
    assert (pc['person']['precision'], pc['person']['recall']) == (1.0, 0.5)
    assert (pc['car']['precision'], pc['car']['recall']) == (0.0, 0.0)
    assert (pc['dog']['precision'], pc['dog']['recall']) == (1.0, 1.0)
    # mean P = (1 + 0 + 1) / 3 = 2/3; mean R = (1/2 + 0 + 1) / 3 = 1/2.
    assert pr['mean_precision'] == approx(2 / 3)
    assert pr['mean_recall'] == approx(0.5)
    # micro: TP 2, FP 1, FN 2 -> P 2/3, R 2/4.
    assert pr['micro_precision'] == approx(2 / 3) and pr['micro_recall'] == approx(0.5)
    # COCO AP (101 recall points, interpolated precision): person reaches recall 0.5 at
    # precision 1, so points 0.00..0.50 (51 of 101) have precision 1 -> AP 51/101 at
    # every IoU threshold (the box is exact); car 0; dog 1. mAP = (51/101 + 0 + 1) / 3.
    m = coco_map(IMAGES, GT, preds)
    assert m['per_class']['person'] == approx(51 / 101)
    assert m['per_class']['car'] == 0.0 and m['per_class']['dog'] == approx(1.0)
    assert m['map'] == approx((51 / 101 + 1) / 3)
    assert m['ap50'] == approx((51 / 101 + 1) / 3)


def test_undefined_ratios_are_none_and_left_out_of_the_means():
    # Predicts only person A: dog and car are never predicted (P undefined, R 0);
    # a hallucinated 'toilet' has P 0 and no ground truth (R undefined).
    preds = [Obj('a', 'person', A, 0.9), Obj('b', 'toilet', D, 0.5)]
    pr = precision_recall(GT, preds)
    assert pr['per_class']['dog']['precision'] is None
    assert pr['per_class']['toilet']['recall'] is None
    # mean P over predicted classes: person 1, toilet 0 -> 1/2.
    assert pr['mean_precision'] == approx(0.5)
    # mean R over classes with ground truth: person 1/2, car 0, dog 0 -> 1/6.
    assert pr['mean_recall'] == approx(1 / 6)
    m = coco_map(IMAGES, GT, preds, categories=['person', 'car', 'dog'])
    assert m['dropped_predictions'] == 1 and 'toilet' not in m['per_class']
    assert precision_recall(GT, [])['mean_precision'] is None


def test_duplicate_detection_is_a_false_positive():
    preds = [Obj('a', 'person', A, 0.9), Obj('a', 'person', (2, 2, 100, 100), 0.8)]
    pc = precision_recall(GT[:1], preds)['per_class']['person']
    assert (pc['tp'], pc['fp'], pc['fn']) == (1, 1, 0)


def test_ignore_region_counts_neither_way():
    region = (500, 0, 700, 200)
    gts = [Obj('a', 'person', A), Obj('a', 'person', region, ignore=True)]
    preds = [Obj('a', 'person', A, 0.9), Obj('a', 'person', (520, 20, 600, 100), 0.8)]
    pr = precision_recall(gts, preds)
    assert (pr['tp'], pr['fp'], pr['fn']) == (1, 0, 0)
    assert coco_map(['a'], gts, preds)['map'] == approx(1.0)
    # the region is not a missed object either
    assert precision_recall(gts, preds[:1])['fn'] == 0


def test_darknet_names_match_coco_names():
    assert canonical_class('motorbike') == 'motorcycle'
    assert canonical_class('diningtable') == 'dining table'
    assert canonical_class('TVMonitor') == 'tv'
    assert canonical_class('potted_plant') == 'potted plant'
    assert canonical_class('pedestrian', {'pedestrian': 'person'}) == 'person'
    assert canonical_class('anything', {'*': 'object'}) == 'object'
    gts = [Obj('m', canonical_class('motorcycle'), A)]
    preds = [Obj('m', canonical_class('motorbike'), A, 0.3)]
    assert precision_recall(gts, preds)['tp'] == 1


# ------------------------------------------------------------------------ grounding

T = (0, 0, 10, 10)
WRONG = (50, 50, 60, 60)


def test_referring_all_correct_none_and_half():
    right = ReferringOutcome(T, (T,), (T, WRONG))
    assert referring_scores([right] * 4)['accuracy'] == 1.0
    wrong = ReferringOutcome(T, (WRONG,), (T, WRONG))
    s = referring_scores([wrong] * 4)
    assert s['accuracy'] == 0.0 and s['no_citation_share'] == 0.0
    assert s['oracle_accuracy'] == 1.0  # the right box was there to cite
    # Half: 2 correct, 1 wrong citation, 1 without citation (and no right box to cite).
    silent = ReferringOutcome(T, (), (WRONG,))
    s = referring_scores([right, right, wrong, silent])
    assert s['accuracy'] == 0.5
    assert s['accuracy_when_cited'] == approx(2 / 3)
    assert s['no_citation_share'] == 0.25
    assert s['oracle_accuracy'] == 0.75                 # 3 of 4 had the right box
    assert s['accuracy_when_reachable'] == approx(2 / 3)
    assert referring_scores([])['accuracy'] is None


def test_only_the_first_cited_box_counts():
    assert referring_scores([ReferringOutcome(T, (WRONG, T), (T, WRONG))])['accuracy'] == 0.0
    # IoU exactly at the threshold is correct: (0,0,10,10) vs (0,0,10,5) = 0.5
    assert referring_scores([ReferringOutcome(T, ((0, 0, 10, 5),), ())])['accuracy'] == 1.0


@pytest.mark.parametrize('class_name, phrase, named', [
    ('motorbike', 'A motorbike', True),
    ('motorbike', 'the red motorcycle', True),
    ('motorbike', 'a bicycle', False),
    ('tie', 'two ties', True),
    ('person', 'A man', True),
    ('person', 'three people', True),
    ('diningtable', 'a dining table', True),
    ('bus', 'the buses', True),
    ('cat', 'a catalog', False),   # whole words only
    ('dog', 'a cat', False),
    ('tvmonitor', 'the television', True),
    ('wine glass', 'two wine glasses', True),
])
def test_class_in_phrase(class_name, phrase, named):
    assert class_in_phrase(class_name, phrase) is named


def test_phrase_class_agreement_share():
    a = phrase_class_agreement([('A motorbike', 'motorbike'), ('a bicycle', 'motorbike'),
                                ('A person', 'person'), ('a tie', 'tie')])
    assert (a['citations'], a['matched'], a['share']) == (4, 3, 0.75)
    assert a['mismatches'] == [{'phrase': 'a bicycle', 'class': 'motorbike'}]
    assert phrase_class_agreement([])['share'] is None


# ---------------------------------------------------------------------------- alerts

def _frames(spec, clip_of=lambda i: 'x'):
    return [AlertFrame(clip_of(i), round(0.1 * i, 3), frozenset(e), frozenset(r))
            for i, (e, r) in enumerate(spec)]


def test_alert_scores_hand_computed():
    frames = _frames([
        ('A', ''),    # 0  A event 1 starts
        ('A', 'A'),   # 1  detected, latency 1 frame / 0.1 s
        ('A', 'A'),   # 2  a reminder inside the event: neither TP nor FP
        ('B', 'B'),   # 3  B event detected at once
        ('B', ''),    # 4
        ('', 'A'),    # 5  A outside any event: false alert
        ('A', ''),    # 6  A event 2 ...
        ('A', ''),    # 7  ... missed
        ('A', ''),    # 8  clip y: A event 3 (a new clip starts a new event)
        ('A', 'A'),   # 9  detected, latency 1
    ], clip_of=lambda i: 'x' if i < 8 else 'y')
    assert alert_events(frames, 'A') == [(0, 2), (6, 7), (8, 9)]
    s = alert_scores(frames)
    a, b, o = s['per_rule']['A'], s['per_rule']['B'], s['overall']
    # A: 3 events, 2 detected, 1 missed, 1 false alert -> P 2/3, R 2/3
    assert (a['events'], a['tp'], a['fp'], a['fn']) == (3, 2, 1, 1)
    assert a['precision'] == approx(2 / 3) and a['recall'] == approx(2 / 3)
    assert a['latency_frames'] == {'mean': 1.0, 'median': 1.0, 'max': 1}
    assert a['latency_s']['mean'] == approx(0.1)
    # B: 1 event, detected on its first frame
    assert (b['tp'], b['fp'], b['fn'], b['precision'], b['recall']) == (1, 0, 0, 1.0, 1.0)
    assert b['latency_frames']['max'] == 0
    # overall: TP 3, FP 1, FN 1 -> P 3/4, R 3/4; latencies 1, 0, 1 frames
    assert (o['tp'], o['fp'], o['fn']) == (3, 1, 1)
    assert o['precision'] == 0.75 and o['recall'] == 0.75
    assert o['latency_frames']['mean'] == approx(2 / 3) and o['latency_frames']['max'] == 1


def test_alert_tolerance_and_undefined_ratios():
    frames = _frames([('A', ''), ('', 'A')])
    s0 = alert_scores(frames)['per_rule']['A']
    assert (s0['tp'], s0['fp'], s0['fn']) == (0, 1, 1)
    s1 = alert_scores(frames, tolerance_frames=1)['per_rule']['A']
    assert (s1['tp'], s1['fp'], s1['fn']) == (1, 0, 0)
    assert s1['latency_frames']['max'] == 1
    quiet = alert_scores(_frames([('', ''), ('', '')]), rules=['A'])['per_rule']['A']
    assert quiet['precision'] is None and quiet['recall'] is None
    never = alert_scores(_frames([('A', ''), ('A', '')]))['per_rule']['A']
    assert never['precision'] is None and never['recall'] == 0.0
