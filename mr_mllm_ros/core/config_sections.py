"""The sections of the configuration (core.config.Config): one frozen dataclass per
section, each field a `spec` - its type, description and allowed values, never a default
(config/mr_mllm.yaml holds every default; core.config loads and checks it). A new key goes
here and into the YAML, with its description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable


def spec(doc: str, *, choices: Iterable[Any] | None = None,
         low: float | None = None, high: float | None = None, read_only: bool = False):
    """A config field: no default here (the YAML holds it), just its contract.

    read_only: needs a reconfigure (cleanup + configure) to change, e.g. model paths."""
    return field(metadata={'doc': doc, 'choices': tuple(choices) if choices else None,
                           'low': low, 'high': high, 'read_only': read_only})


@dataclass(frozen=True)
class CameraConfig:
    compressed: bool = spec('Subscribe to `image/compressed` (sensor_msgs/CompressedImage) '
                            'instead of `image` (sensor_msgs/Image).', read_only=True)
    qos_reliability: str = spec('Image subscription reliability. best_effort is the '
                                'sensor-data profile (never stalls the camera driver).',
                                choices=('best_effort', 'reliable'), read_only=True)
    qos_depth: int = spec('Image subscription queue depth (1 = keep only the newest).',
                          low=1, high=100, read_only=True)
    rgbd: str = spec('Aligned depth + camera_info beside the colour image, by driver naming '
                     '(core.geometry.rgbd_topics): none = colour `image` only; image_depth = '
                     '`image`, `depth`, `camera_info`; realsense = `color/image_raw`, '
                     '`aligned_depth_to_color/image_raw`, `color/camera_info`; azure_kinect = '
                     '`rgb/image_raw`, `depth_to_rgb/image_raw`, `rgb/camera_info`; custom = '
                     '`image` + camera.depth_topic + camera.camera_info_topic.',
                     choices=('none', 'image_depth', 'realsense', 'azure_kinect', 'custom'),
                     read_only=True)
    depth_topic: str = spec('Depth topic when camera.rgbd is custom (relative to the camera '
                            'namespace).', read_only=True)
    camera_info_topic: str = spec('camera_info topic when camera.rgbd is custom.',
                                  read_only=True)
    depth_compressed: bool = spec('Subscribe to `<depth>/compressedDepth` '
                                  '(compressed_depth_image_transport) instead of raw depth.',
                                  read_only=True)


@dataclass(frozen=True)
class DetectorConfig:
    backend: str = spec('Detection backend: opencv_ssd (TensorFlow SSD graphs, e.g. '
                        'SSD-MobileNet-v2 COCO), opencv_darknet (Darknet YOLO, e.g. '
                        'YOLOv3-tiny), ultralytics (YOLOv8/11, YOLO-World, YOLOE).',
                        choices=('opencv_ssd', 'opencv_darknet', 'ultralytics'),
                        read_only=True)
    model: str = spec('Weights: TensorFlow frozen graph .pb (opencv_ssd), darknet .weights, '
                      'or ultralytics .pt/.onnx/.engine/.yaml. A relative path is looked up '
                      'in models_dir.', read_only=True)
    darknet_cfg: str = spec('Darknet network .cfg (opencv_darknet); empty = the model path '
                            'with a .cfg suffix.', read_only=True)
    tf_graph: str = spec('OpenCV text graph .pbtxt of the frozen graph (opencv_ssd); empty = '
                         'the one .pbtxt beside the model.', read_only=True)
    labels: str = spec('Class names file, one per line: opencv_darknet: class 0, 1, ... '
                       '(empty = coco.names beside the model); opencv_ssd: class id 1, 2, '
                       '... (empty = the 90-id COCO label map).', read_only=True)
    device: str = spec('Inference device: cpu, cuda or cuda:N.', read_only=True)
    half: bool = spec('fp16 inference (GPU only; ignored on CPU).', read_only=True)
    imgsz: int = spec('Network input size in pixels (square). opencv_ssd: the size '
                      'the graph was exported for (300 for SSD-MobileNet-v2); '
                      'opencv_darknet: a multiple of 32.', low=32, high=4096,
                      read_only=True)
    conf: float = spec('Minimum detection confidence.', low=0.0, high=1.0)
    iou: float = spec('IoU threshold of non-maximum suppression.', low=0.0, high=1.0)
    max_detections: int = spec('Keep at most this many detections per frame (highest '
                               'scores).', low=1, high=1000)
    classes: list[str] = spec('Only report these class names; empty = all classes.')
    warmup: bool = spec('Run one dummy inference when the model loads, so the first real '
                        'frame is not slow.', read_only=True)


@dataclass(frozen=True)
class TrackerConfig:
    kind: str = spec('Multi-object tracker giving track ids, for every detector backend '
                     '(ultralytics\' ByteTrack / BoT-SORT / OC-SORT on the detected boxes, '
                     'core/detection/tracking.py); none = track id -1.',
                     choices=('none', 'bytetrack', 'botsort', 'ocsort'), read_only=True)
    lost_keep_s: float = spec('Seconds a lost track is kept to be found again with its id '
                              '(occlusions, missed detections), in message time; longer '
                              'bridges longer gaps but risks joining two objects.',
                              low=0.0, high=3600.0, read_only=True)
    confirm_s: float = spec('A new track gets an id once it has been seen this long (message '
                            'time): one-frame flicker never becomes a track. Tracks in a '
                            'camera\'s first frame get theirs at once.', low=0.0, high=60.0,
                            read_only=True)
    low_score: float = spec('Boxes down to this score reach the tracker\'s second '
                            'association (ByteTrack): the detector runs at min(detector.conf, '
                            'this); a box below detector.conf is published only when it '
                            'continues a confirmed track.', low=0.0, high=1.0, read_only=True)
    new_track_score: float = spec('Score a box needs to start a new track (at least '
                                  'detector.conf).', low=0.0, high=1.0, read_only=True)
    match_buffer: float = spec('Buffered IoU: each box is enlarged by this share of its size '
                               'on every side for association only, so small or jittery '
                               'boxes overlap their track (0 = plain IoU).', low=0.0,
                               high=5.0, read_only=True)
    class_overrides: list[str] = spec('Per-class parameters, entries "class[, class...]: '
                                      'key=value[, ...]" with keys lost_keep_s, confirm_s, '
                                      'new_track_score, match_buffer. Classes in one entry '
                                      'share one tracker (a van called car or truck keeps '
                                      'its id); every other class is tracked on its own.',
                                      read_only=True)


@dataclass(frozen=True)
class PerceptionConfig:
    publish_debug_image: bool = spec('Publish `debug_image` with boxes drawn (costs ~1-3 ms '
                                     'per frame plus the message).')
    diagnostics_period_s: float = spec('Period of /diagnostics updates.', low=0.1, high=60.0)
    stale_after_s: float = spec('Report the camera stream as stale (diagnostics WARN) when '
                                'no image arrived for this long.', low=0.1, high=3600.0)
    threads: int = spec('CPU threads of the detector in perception_node (OpenCV, torch); 0 = '
                        'half the CPUs the process may use: the MLLM node needs the rest '
                        '(core/runtime/cpu_threads.py).', low=0, high=1024, read_only=True)
    cameras: list[str] = spec('Camera namespaces served by ONE perception_node (one model, '
                              'one latest-frame slot per camera, served round-robin): '
                              'subscribes <cam>/image, publishes <cam>/detections. Empty = '
                              'one camera: the node\'s own `image` / `detections`.',
                              read_only=True)


@dataclass(frozen=True)
class DepthConfig:
    inner_fraction: float = spec('A box\'s depth is read in its central region, this share '
                                 'of its width and height (less background).', low=0.05,
                                 high=1.0)
    min_valid_fraction: float = spec('A box gets no position when fewer of its region\'s '
                                     'pixels hold valid depth.', low=0.0, high=1.0)
    min_m: float = spec('Depth below this is no measurement (m).', low=0.0, high=100.0)
    max_m: float = spec('Depth beyond this is no measurement (m).', low=0.01, high=1000.0)
    max_stamp_difference_s: float = spec('A depth image pairs with the colour image nearest '
                                          'in stamp within this.', low=0.0, high=10.0)
    pair_buffer_size: int = spec('Depth images kept to pair with colour images.', low=1,
                                 high=1000, read_only=True)
    publish_markers: bool = spec('Publish `markers` (visualization_msgs/MarkerArray) of the '
                                 'positioned objects for RViz.')


@dataclass(frozen=True)
class MllmConfig:
    backend: str = spec('MLLM backend: transformers_vlm (sees the image), transformers_llm '
                        '(text LLM that sees the image only through the perception prompt), '
                        'llama_cpp (a GGUF text LLM on llama.cpp; needs llama-cpp-python), '
                        'openai (any OpenAI-compatible server), template (no model: '
                        'grounded sentences from the detections and their positions), none '
                        '(detection only).',
                        choices=('transformers_vlm', 'transformers_llm', 'llama_cpp', 'openai',
                                 'template', 'none'),
                        read_only=True)
    model: str = spec('transformers: a local folder (relative = in models_dir) or a hub id '
                      '(needs HF_HUB_OFFLINE=0 and network); llama_cpp: a .gguf file '
                      '(relative = in models_dir); openai: the served model name.',
                      read_only=True)
    device: str = spec('transformers device: cpu, cuda or cuda:N.', read_only=True)
    dtype: str = spec('Weights dtype; auto = float32 on CPU, bfloat16 on GPUs that support '
                      'it, else float16.',
                      choices=('auto', 'float32', 'float16', 'bfloat16'), read_only=True)
    attn_implementation: str = spec('transformers attention kernel.',
                                    choices=('sdpa', 'eager', 'flash_attention_2'),
                                    read_only=True)
    trust_remote_code: bool = spec('Allow model repositories to run their own Python code. '
                                   'Off: only architectures built into transformers load.',
                                   read_only=True)
    allow_pickle_weights: bool = spec('Allow pickled .bin/.pt transformers checkpoints (a '
                                      'pickle can run code when loaded). Off: safetensors '
                                      'only.', read_only=True)
    max_new_tokens: int = spec('Token limit of an answer.', low=1, high=4096)
    describe_max_new_tokens: int = spec('Token limit of the words the model writes in one '
                                        'description (all stretches between its planned '
                                        'phrases; the rest take the template\'s words): what '
                                        'a 2-5 s step affords on a CPU (~7 tok/s beside the '
                                        'detector on 2 cores).', low=1, high=4096)
    temperature: float = spec('0 = greedy (deterministic, the default for robots).',
                              low=0.0, high=2.0)
    repetition_penalty: float = spec('>1 discourages loops in small models.', low=1.0,
                                     high=2.0)
    no_repeat_ngram_size: int = spec('A reply may not repeat an n-gram of its own tokens '
                                     '(grounding markup excepted): stops repetition loops. '
                                     '0 = off (transformers and llama_cpp backends).',
                                     low=0, high=64)
    connector_max_tokens: int = spec('Token limit of each stretch of words the model writes '
                                     'between the planned grounded phrases of a description '
                                     'or count/presence answer.', low=1, high=256)
    llama_threads: int = spec('llama_cpp: CPU threads (0 = all cores).', low=0, high=512,
                              read_only=True)
    llama_context: int = spec('llama_cpp: context window in tokens.', low=256, high=131072,
                              read_only=True)
    constrained_decoding: bool = spec('Make references to objects that are not in the '
                                      'prompt impossible to generate (transformers and '
                                      'llama_cpp backends).')
    kv_reuse: bool = spec('Keep the KV cache of the fixed prompt prefix (system prompt and '
                          'examples) across frames (transformers_llm, llama_cpp).')
    prompt_template: str = spec('Prompt template: a name in mr_mllm_ros/prompts '
                                '(e.g. scene_v1) or a path to a template YAML.')
    max_objects: int = spec('At most this many detections go into a prompt (highest scores '
                            'first).', low=0, high=200)
    object_token_budget: int = spec('Token budget of the object list in a prompt; objects '
                                    'that do not fit are left out (lowest scores first).',
                                    low=16, high=8192)
    image_max_side: int = spec('Images sent to a VLM or server are downscaled so the longer '
                               'side is at most this (0 = never); for tiling VLMs '
                               '(Idefics3/SmolVLM) it also caps the tiling resolution.',
                               low=0, high=8192)
    openai_base_url: str = spec('OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 '
                                '(vLLM), http://127.0.0.1:11434/v1 (Ollama).', read_only=True)
    openai_api_key_env: str = spec('Environment variable holding the API key (the key itself '
                                   'never goes into a config file).', read_only=True)
    openai_timeout_s: float = spec('Per-request timeout.', low=0.1, high=600.0)
    openai_retries: int = spec('Retries after a failed request (exponential back-off).',
                               low=0, high=10)
    openai_backoff_base_s: float = spec('First back-off before a retry; it doubles each '
                                        'retry (with jitter).', low=0.0, high=60.0)
    openai_backoff_max_s: float = spec('Longest back-off, also the cap of a server\'s '
                                       'Retry-After.', low=0.0, high=600.0)
    openai_continue_final_message: bool = spec(
        'Send the answer prefix (e.g. <ground>) as a partial assistant message the server '
        'continues (vLLM continue_final_message). Off = portable: the prefix is not sent.')


@dataclass(frozen=True)
class SceneConfig:
    description_rate_hz: float = spec('Describe the latest frame this often (0 = only on '
                                      'scene changes).', low=0.0, high=30.0)
    describe_on_change: bool = spec('Also describe at once when the scene changes: a class '
                                    'appears or leaves, the count of a class changes and '
                                    'stays changed, or a track enters or leaves while the '
                                    'count stays (core/reasoning/scene_change.py).')
    change_hold_s: float = spec('A class appearing or leaving, or a new count of a class, is a '
                                'change once it held in most frames of this many seconds '
                                '(one missed or extra box is not).', low=0.0, high=600.0)
    change_track_min_age_s: float = spec('A track enters once it has been seen this long and '
                                         'leaves once unseen this long; younger tracks (id '
                                         'churn, flicker) change nothing.', low=0.0,
                                         high=600.0)
    min_description_interval_s: float = spec('Never describe more often than this, scene '
                                             'changes included (protects the MLLM).',
                                             low=0.0, high=3600.0)
    describe_every_frame: bool = spec('Reason on every new frame instead (no rate, change or '
                                      'interval rule, no back-off): per-image commands, '
                                      '`replay --describe-every-frame`.')
    threads: int = spec('CPU threads of the MLLM in scene_node (torch, OpenCV); 0 = half the '
                        'CPUs the process may use: the detector node needs the rest.',
                        low=0, high=1024, read_only=True)
    nice: int = spec('Niceness added to scene_node\'s MLLM thread (and the threads it starts) '
                     'over the rest of the process, and, when scene_node runs alone in a '
                     'session of its own (mr-mllm up), to its Linux autogroup: on a CPU-only '
                     'robot the detector keeps its rate while the MLLM answers, and the MLLM '
                     'gets the CPU left. 0 = same priority; mllm.backend none: not applied. '
                     'Linux only.', low=0, high=19,
                     read_only=True)
    pair_buffer_size: int = spec('Frames (and detections) kept to pair them by stamp and '
                                 'to answer questions about recent frames.', low=1, high=1000)
    vqa_queue_size: int = spec('ask_scene requests waiting at most; more get an immediate '
                               'busy answer.', low=1, high=100)
    max_question_chars: int = spec('Longer questions are refused.', low=1, high=100000)
    vqa_max_timeout_s: float = spec('Cap on a request\'s own timeout_s.', low=0.1,
                                    high=3600.0)
    diagnostics_period_s: float = spec('Period of /diagnostics updates.', low=0.1, high=60.0)
    max_frame_age_s: float = spec('ask_scene (service and action) answers about a frame at '
                                  'most this old (seconds since scene_node received it) '
                                  'unless the request sets its own max_age_s.', low=0.01,
                                  high=3600.0)
    fresh_frame_wait_s: float = spec('How long a question waits for a frame younger than its '
                                     'max age (with its detections) before it is refused as '
                                     'stale.', low=0.0, high=60.0)


@dataclass(frozen=True)
class ReinforceConfig:
    enabled: bool = spec('MLLM -> perception feedback: verify uncertain boxes, label unknown '
                         'ones, publish detections_refined.')
    verify_min_score: float = spec('Boxes with a score in [verify_min_score, '
                                   'verify_max_score) get a yes/no check by the MLLM.',
                                   low=0.0, high=1.0)
    verify_max_score: float = spec('Upper end of the uncertain band (exclusive).', low=0.0,
                                   high=1.0)
    accept_probability: float = spec('P(yes) at or above which a checked box is marked '
                                     'verified.', low=0.0, high=1.0)
    reject_probability: float = spec('P(yes) below which a checked box is dropped.',
                                     low=0.0, high=1.0)
    mllm_weight: float = spec('Re-scored confidence = (1 - w) * detector score + w * P(yes).',
                              low=0.0, high=1.0)
    fusion_weight: float = spec('With a fusion adapter (fusion.adapter_path): P(yes) of a '
                                'checked box = (1 - w) * the MLLM\'s P(yes) + w * the '
                                'adapter re-scoring head\'s P(right); 0 = the MLLM alone '
                                '(benchmarks/fusion_rescore.py measures the head).',
                                low=0.0, high=1.0)
    max_checks: int = spec('At most this many boxes are checked per frame (highest scores '
                           'first).', low=0, high=100)
    verify_blind: bool = spec('Also ask a backend that does not see the image (sees_images '
                              'false, no fusion adapter: a text LLM) to verify boxes. Its '
                              'P(yes) rests on the box\'s words, not its pixels (on a street '
                              'video it stayed 0.41-0.54 for every box, never crossing '
                              'accept/reject) and costs 1-2 s of a CPU step; the looker checks '
                              'pixels instead. false = only backends that see verify.')
    unknown_labels: list[str] = spec('Detector labels that mean "not sure what this is": '
                                     'such boxes get an open-vocabulary label from the MLLM.')
    label_max_score: float = spec('Boxes scoring below this also get an open-vocabulary '
                                  'label (0 = only unknown labels).', low=0.0, high=1.0)
    redetect_model: str = spec('Open-vocabulary ultralytics model (YOLO-World / YOLOE .pt) '
                               'used to find objects the MLLM names without a box; empty = '
                               'off.', read_only=True)


@dataclass(frozen=True)
class LookerConfig:
    enabled: bool = spec('The looker: an image classifier (and a pose model) on the box '
                         'crops and the whole frame in every reasoning step (never per '
                         'frame); its words go into the prompt, its votes into the '
                         'reinforcement (reinforce.enabled).', read_only=True)
    model: str = spec('Image classifier, TFLite, uint8 input (EfficientNet-Lite3 ImageNet-1k '
                      'int8); relative = in models_dir.', read_only=True)
    labels: str = spec('Its class names, one a line in output order; relative = in '
                       'models_dir.', read_only=True)
    mapping: str = spec('ImageNet -> COCO mapping file; empty = the packaged '
                        'config/imagenet_coco.yaml.', read_only=True)
    threads: int = spec('CPU threads of each LiteRT interpreter (0 = its default). The '
                        'looker runs on the CPU (XNNPACK).', low=0, high=256, read_only=True)
    max_crops: int = spec('At most this many box crops per reasoning step (largest boxes '
                          'first); each costs one classifier run (~25-45 ms on 2 cores).',
                          low=0, high=100)
    min_crop_side: int = spec('Boxes narrower or lower than this (pixels) are not looked at '
                              '(too few pixels to classify).', low=1, high=4096)
    crop_margin: float = spec('Context around a box in its crop, share of its width/height '
                              'on each side.', low=0.0, high=1.0)
    look_at_frame: bool = spec('Also classify the whole frame: "the scene looks like" in '
                               'the prompt, and names for what no box explains.')
    top_k: int = spec('Labels kept per crop and for the frame (Detection.looks_like, '
                      'DetectionSet.looks_like) at most.', low=1, high=20)
    min_probability: float = spec('Labels below this probability are not kept in looks_like '
                                  'nor said in prompts ("looks like: espresso 86%").',
                                  low=0.0, high=1.0)
    verify_min_support: float = spec('A box is verified when P(its class, or what it is '
                                     'seen with) in its crop reaches this.', low=0.0,
                                     high=1.0)
    contradict_max_support: float = spec('Relabel and reject need the box\'s own class to '
                                         'score below this in its crop.', low=0.0, high=1.0)
    relabel_min_probability: float = spec('A box is relabelled when its crop IS another COCO '
                                          'class with at least this probability (original '
                                          'class kept).', low=0.0, high=1.0)
    reject_min_probability: float = spec('A box is rejected when its crop\'s top label (not '
                                         'its class, nothing it is seen with) has at least '
                                         'this probability.', low=0.0, high=1.0)
    reject_person_min_probability: float = spec('The same for a person box (ImageNet has no '
                                                'person class, so a person\'s crop always '
                                                'shows "something else": what they wear or '
                                                'hold).', low=0.0, high=1.0)
    reject_animal_min_mass: float = spec('A box of a COCO animal class is rejected when its '
                                         'crop puts at least this probability on other '
                                         'animals (ImageNet\'s animal labels outside the '
                                         'class) and below contradict_max_support on the '
                                         'class: a quokka boxed as a dog.', low=0.0,
                                         high=1.0)
    name_min_probability: float = spec('A box with an unknown label (reinforce.'
                                       'unknown_labels) is named after its crop\'s top label '
                                       'at this probability or above.', low=0.0, high=1.0)
    frame_name_min_probability: float = spec('The whole frame\'s top label at this '
                                             'probability or above, explained by no box, is '
                                             'added as an object covering the frame (source '
                                             'looker).', low=0.0, high=1.0)
    posture: bool = spec('Posture (upright / sitting / lying) of each person crop with a pose '
                         'model; the person_down alert rule uses it.', read_only=True)
    posture_model: str = spec('Pose model, TFLite single-person 17 keypoints (MoveNet '
                              'Lightning); relative = in models_dir.', read_only=True)
    posture_min_keypoint_score: float = spec('Keypoints scoring below this are not used.',
                                             low=0.0, high=1.0)
    person_pose_min: float = spec('A person crop whose 5 best keypoints score this on '
                                  'average is a person to the pose model: it gets a posture, '
                                  'counts as verified, and is never rejected.', low=0.0,
                                  high=1.0)
    lying_min_angle: float = spec('Lying: the torso (shoulders -> hips) leans more than this '
                                  'from vertical (degrees).', low=0.0, high=180.0)
    sitting_min_thigh_angle: float = spec('Sitting: torso upright and a thigh (hip -> knee) '
                                          'leans more than this from vertical (degrees).',
                                          low=0.0, high=180.0)
    posture_turn_min_aspect: float = spec('Person boxes wider than tall by this ratio are '
                                          'also looked at turned by +-90 degrees (the pose '
                                          'model misses people lying across the image).',
                                          low=0.0, high=100.0)


@dataclass(frozen=True)
class AlertsConfig:
    enabled: bool = spec('Raise corner-case alerts.')
    rules_file: str = spec('Alert rules YAML; empty = the packaged config/alert_rules.yaml.',
                           read_only=True)
    mllm_judgement: bool = spec('Also ask the MLLM "anything unusual or hazardous?" (yes/no '
                                '+ one-line reason), configured by the mllm_judgement rule.')
    judgement_rate_hz: float = spec('How often the MLLM judgement runs at most.', low=0.0,
                                    high=30.0)
    evidence_max_side: int = spec('Evidence image of an alert (the triggering frame, boxes '
                                  'drawn, JPEG): longer side in pixels; 0 = no evidence '
                                  'image.', low=0, high=8192)
    evidence_jpeg_quality: int = spec('JPEG quality of the evidence image.', low=1, high=100)
    clip_before_s: float = spec('Replay: seconds before an alert in its MCAP clip (clips/).',
                                low=0.0, high=600.0)
    clip_after_s: float = spec('Replay: seconds after an alert in its MCAP clip (clips/).',
                               low=0.0, high=600.0)


@dataclass(frozen=True)
class FusionConfig:
    adapter_path: str = spec('Trained shared-query fusion adapter (a folder with '
                             'adapter.safetensors + adapter.json); empty = prompt-only.',
                             read_only=True)


@dataclass(frozen=True)
class MemoryConfig:
    url: str = spec('Where the scene memory lives: a SQLite file path (relative = in '
                    '$ROS_HOME, default ~/.ros) or a PostgreSQL URL '
                    '(postgresql://user@host/db; the password from PGPASSWORD or ~/.pgpass, '
                    'never from this file).', read_only=True)
    cameras: list[str] = spec('Camera namespaces memory_node listens to (<cam>/detections, '
                              '<cam>/scene_description, <cam>/alerts); empty = the node\'s own '
                              'namespace.', read_only=True)
    batch_size: int = spec('Items written per transaction at most (a killed process loses '
                           'at most the batch being collected).', low=1, high=100000,
                           read_only=True)
    flush_interval_s: float = spec('Commit what is waiting at least this often.', low=0.01,
                                   high=60.0, read_only=True)
    queue_size: int = spec('Items waiting for the writer at most; more are dropped and '
                           'counted in diagnostics.', low=1, high=10_000_000, read_only=True)
    watch_gap_s: float = spec('Frames of one camera closer than this form one watched span '
                              '(a longer gap = the camera was not watching).', low=0.01,
                              high=3600.0, read_only=True)
    retention_max_age_s: float = spec('Forget what is older than this before the newest '
                                      'observation (0 = keep everything).', low=0.0,
                                      high=3.2e9, read_only=True)
    retention_max_mb: float = spec('Forget the oldest data while the memory is larger than '
                                   'this (0 = no limit).', low=0.0, high=1e7, read_only=True)
    embeddings: bool = spec('Sentence embeddings (all-MiniLM-L6-v2, offline) for '
                            'descriptions and for question words that name no known class.',
                            read_only=True)
    thumbnail_interval_s: float = spec('memory_node also subscribes to <cam>/image and '
                                       'keeps a JPEG crop of each track, again every this '
                                       'many seconds it stays in view (beside a SQLite file '
                                       'in <file>_thumbnails/); 0 = no images, no thumbnails.',
                                       low=0.0, high=86400.0, read_only=True)
    thumbnail_side_px: int = spec('Longer side of a thumbnail crop (smaller crops are kept '
                                  'as they are).', low=16, high=4096)
    thumbnail_jpeg_quality: int = spec('JPEG quality of a thumbnail crop.', low=1, high=100)
    max_question_chars: int = spec('Longer questions are refused.', low=1, high=100000)
    diagnostics_period_s: float = spec('Period of /diagnostics updates.', low=0.1, high=60.0)
    odometry_topic: str = spec('nav_msgs/Odometry topic of the robot\'s pose: positions are '
                               'then stored in its frame (a memory of places); empty = in '
                               'the camera\'s optical frame.', read_only=True)
    camera_mount: list[float] = spec('The camera\'s mounting: [x, y, z, qx, qy, qz, qw] from '
                                     'the odometry child frame (base) to the camera\'s '
                                     'optical frame (x right, y down, z forward).',
                                     read_only=True)
    max_pose_gap_s: float = spec('A frame takes the odometry pose interpolated at its stamp '
                                 'from poses at most this far apart (else camera frame).',
                                 low=0.001, high=10.0, read_only=True)
