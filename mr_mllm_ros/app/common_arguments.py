"""Command-line options several `mr-mllm` commands share, spelled once so that they
mean the same in each (`up`, `view`, `record`)."""


def add_cameras_argument(p) -> None:
    p.add_argument('--namespace', action='append', default=[],
                   help='camera namespace (repeat for several cameras; default: none)')


def add_duration_argument(p) -> None:
    p.add_argument('--duration', type=float, default=0.0, metavar='S',
                   help='stop after S seconds (default 0: until Ctrl-C / SIGTERM)')
