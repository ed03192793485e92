"""Prometheus counters and gauges, rendered in the text exposition format (version 0.0.4).

A handful of labelled counters does not justify a dependency; each process keeps its own.
"""

from __future__ import annotations

import threading
from collections import defaultdict

_HELP = {
    "scep_requests_total": ("counter", "SCEP requests by alias, operation and outcome."),
    "scep_certificates_issued_total": ("counter", "Certificates issued, by alias and CA."),
    "scep_config_reloads_total": ("counter", "Configuration loads by result (success, failure)."),
    "scep_config_last_reload_success": ("gauge", "1 if the last configuration load succeeded."),
    "scep_config_errors": ("gauge", "Problems in the configuration directory right now."),
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0)

    def render(self) -> bytes:
        lines = []
        with self._lock:
            for name, (kind, text) in _HELP.items():
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
                for labels, value in sorted(self._values.get(name, {}).items()):
                    rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                    lines.append(
                        f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}"
                    )
        return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
