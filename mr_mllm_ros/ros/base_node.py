"""What perception_node, scene_node and memory_node share as lifecycle nodes: parameters
declared from the config schema, /diagnostics on a timer that runs in every lifecycle state
(an unconfigured node reports why), rejected-input bookkeeping, and freeing the model on
cleanup."""

from __future__ import annotations

from typing import Sequence

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from ..core.config import Config
from ..core.errors import MrMllmError
from ..core.runtime.inference_worker import InferenceWorker
from . import conversions as conv
from .node_runtime import ErrorCounter, freeze_heap, release_memory
from .params import ConfigParameters


class ModelLifecycleNode(LifecycleNode):
    def __init__(self, name: str, sections: Sequence[str], diagnostics_period_param: str,
                 **kwargs):
        super().__init__(name, **kwargs)
        self._params = ConfigParameters(self, sections, on_change=self._on_config_change)
        self._config: Config | None = None
        self._errors = ErrorCounter(self.get_logger())
        self._subs: list = []
        self._last_error = ''
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diag_timer = self.create_timer(
            self.get_parameter(diagnostics_period_param).value, self._on_diagnostics_timer)
        self._worker: InferenceWorker | None = None  # see _start_worker

    # subclasses: free everything configure created (called on cleanup and shutdown,
    # after _stop_input)
    def _release(self) -> None:
        raise NotImplementedError

    # subclasses: drop the input that waits for the worker (deactivate, cleanup, shutdown)
    def _drop_pending(self) -> None:
        raise NotImplementedError

    # subclasses: publish their status with self._publish_status(...)
    def _on_diagnostics_timer(self) -> None:
        raise NotImplementedError

    def _on_config_change(self, config: Config) -> None:
        # Keys marked "applied at the next configure" are read again in on_configure;
        # the rest take effect on the next frame through self._config.
        self._config = config

    def _configured(self, summary: str) -> TransitionCallbackReturn:
        self._last_error = ''
        self.get_logger().info(f'configured: {summary}')
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, error: Exception) -> TransitionCallbackReturn:
        self.get_logger().error(f'configure failed: {error}')
        self._last_error = str(error)
        return TransitionCallbackReturn.FAILURE

    def _image_ok(self, msg) -> bool:
        """The image message's structure only (O(1), no decoding); a malformed one is
        counted and logged as rejected."""
        try:
            conv.check_image_msg(msg, self._config.max_image_pixels)
        except MrMllmError as e:
            self._errors.add('image', str(e))
            return False
        return True

    def _unsubscribe(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []

    def _stop_input(self) -> None:
        self._unsubscribe()
        self._drop_pending()

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        freeze_heap()  # the model is loaded: keep its objects out of the cyclic GC's walks
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._release()
        release_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _start_worker(self, name: str, on_tick, on_job=None) -> None:
        """The node's one inference thread (core.runtime.inference_worker): it lives as long as
        the node, across lifecycle cycles (its callbacks do nothing while unconfigured),
        and destroy_node stops it."""
        self._worker = InferenceWorker(name, on_tick, on_job, self._on_worker_bug)
        self._worker.start()

    def destroy_node(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        super().destroy_node()

    def _on_worker_bug(self, e: BaseException) -> None:
        if not self.context.ok():
            # Ctrl-C / SIGTERM shut the context down before destroy_node stops our
            # threads: a publish in that window fails, and that is no bug.
            return
        self.get_logger().error(f'{self._worker.name} thread: {e!r}')

    def _publish_status(self, kind: str, configured: bool, ok_message: str, hardware_id: str,
                        values: dict[str, str], warning: str = '') -> None:
        """One DiagnosticStatus '<node>: <kind>': ERROR while not configured or after an
        error (reported once), WARN with `warning`, else OK. Rejected inputs are listed
        per reason."""
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: {kind}',
                                  hardware_id=hardware_id)
        if not configured:
            status.level = DiagnosticStatus.ERROR
            status.message = f'model not loaded: {self._last_error}' if self._last_error \
                else 'not configured'
        elif self._last_error:
            status.level, status.message = DiagnosticStatus.ERROR, self._last_error
            self._last_error = ''
        elif warning:
            status.level, status.message = DiagnosticStatus.WARN, warning
        else:
            status.level, status.message = DiagnosticStatus.OK, ok_message
        values = dict(values, frames_malformed=str(self._errors.total))
        for reason, count in sorted(self._errors.by_reason.items()):
            values[f'malformed: {reason}'] = str(count)
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        self._diag_pub.publish(DiagnosticArray(
            header=conv.header_of(self.get_clock().now().nanoseconds, ''), status=[status]))
