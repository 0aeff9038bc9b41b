"""Parameter changes while the node runs: validated, refused when the lifecycle state forbids them
(see params.classify_change), tunable pipeline fields passed on with `MoonSeg3RPipeline.update_config`,
output timers restarted when their rates change. `RuntimeParamsMixin` is part of MoonSeg3RNode (node.py).
"""
from __future__ import annotations

from typing import Any, Optional

from rcl_interfaces.msg import SetParametersResult

from moonseg3r_ros.ros import params


def refusal(name: str, value: Any, spec, configured: bool, active: bool) -> Optional[str]:
    """Why the parameter `name` may not take `value` now (None when it may)."""
    reason = params.validate_value(name, value, spec, params.field_kind(name))
    if reason:
        return reason
    change = params.classify_change(name)
    if change == "restart_pipeline" and configured:
        return (f"'{name}' defines the models or the map layout: change it while unconfigured "
                f"(cleanup, set, configure)")
    if change == "reactivate" and active:
        return (f"'{name}' is used when subscriptions and publishers are created: change it while "
                f"inactive (deactivate, set, activate)")
    return None


class RuntimeParamsMixin:
    """The on-set-parameters callback of MoonSeg3RNode."""

    _following_map_config = False  # set by map_config_sync while it mirrors a loaded map's MapConfig

    def _on_set_parameters(self, changes) -> SetParametersResult:
        if self._following_map_config:  # the values describe the map now running: nothing to check or apply
            return SetParametersResult(successful=True)
        specs = params.all_specs()
        configured = self._pipeline is not None
        updates: dict[str, Any] = {}
        for p in changes:
            if p.name not in specs:
                continue
            value = list(p.value) if params.field_kind(p.name) is list else p.value
            reason = refusal(p.name, value, specs[p.name][1], configured, self._active)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            updates[p.name] = value
        if not updates:
            return SetParametersResult(successful=True)
        values = params.read_all(self)
        values.update(updates)
        try:
            pipeline_config, node_config = params.split_values(values)
        except (KeyError, ValueError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        pipeline_updates = [k for k in updates if specs[k][0] == "pipeline"]
        if pipeline_updates and configured:
            with self._lock:
                try:
                    self._pipeline.update_config(pipeline_config, pipeline_updates)
                except ValueError as err:
                    return SetParametersResult(successful=False, reason=str(err))
        old_rate = self.config.cloud.rate
        self.pipeline_config, self.config = pipeline_config, node_config
        if self._active and (node_config.cloud.rate != old_rate or "diagnostics_rate" in updates):
            for timer in self._output_timers:
                self.destroy_timer(timer)
            self._start_timers()
        return SetParametersResult(successful=True)
