"""Corner-case alerts: a rule engine over detections and image statistics, plus the
debounce/cooldown of the MLLM's "anything unusual or hazardous?" judgement.

Split by concern: rules.py (schema and loading; defaults only in
config/alert_rules.yaml), geometry.py (image regions), quality.py (image statistics),
conditions.py (what each rule type checks on a frame), arrivals.py (when a camera's
frames came: is it streaming?), engine.py (debounce, cooldown, the Alert with its
window, values and rationale).
"""

from .arrivals import FrameArrivals
from .conditions import APPEARANCE_IOU
from .engine import FEEDBACK_TYPES, PER_FRAME_TYPES, AlertEngine, rationale
from .regions import anchor_point, box_overlaps_polygon, in_region, point_in_polygon
from .quality import QUALITY_SIDE, SATURATED_LEVEL, FrameQuality, frame_quality
from .rules import (ANCHORS, DISAGREEMENT_KINDS, RULE_TYPES, RULES_FILE_NAME, Rule,
                    default_rules_path, load_rules, packaged_defaults, parse_rule)

__all__ = ['ANCHORS', 'APPEARANCE_IOU', 'DISAGREEMENT_KINDS', 'FEEDBACK_TYPES',
           'PER_FRAME_TYPES', 'QUALITY_SIDE', 'RULES_FILE_NAME', 'RULE_TYPES',
           'SATURATED_LEVEL', 'AlertEngine', 'FrameArrivals', 'FrameQuality', 'Rule',
           'anchor_point', 'box_overlaps_polygon', 'default_rules_path', 'frame_quality',
           'in_region', 'load_rules', 'packaged_defaults', 'parse_rule', 'point_in_polygon',
           'rationale']
