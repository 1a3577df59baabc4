"""Ray's known-harmless first-run lines are dropped; anything else, errors first, still shows (no Ray needed)."""

from __future__ import annotations

import logging

from raygr.distributed.session import _filtered, filter_ray_noise, is_harmless

# Verbatim from a first `raygr demo` with Ray 2.60 (issue 24).
SEEN = [
    "[2026-12-03 16:17:51,693 E 5668 5767] core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and ID: "
    "'58019e0f7c6c71d7f9e7e11e01000000' has constructor arguments in the object store and max_restarts > 0. If the "
    "arguments in the object store go out of scope or are lost, the actor restart will fail. See "
    "https://github.com/ray-project/ray/issues/53727 for more details.",
    "/usr/lib/python3.11/site-packages/ray/data/_internal/execution/interfaces/execution_options.py:436: "
    "RayDeprecationWarning: `ExecutionOptions.exclude_resources` is deprecated and will be removed after January "
    "2027. Use `ExecutionOptions.label_selector` to constrain Ray Data work to labeled nodes.",
    "  self.exclude_resources = exclude_resources",
    "Progress bars disabled. To enable, set `ray.data.DataContext.get_current().enable_progress_bars = True`.",
    'Connecting to existing Serve app in namespace "serve". New http_options/controller_options will not be applied.',
    "Task ServeController.graceful_shutdown failed. There are infinite retries remaining, so the task will be "
    "retried. Error: The actor is dead because it was killed by `ray.kill`.",
]
REAL = [
    "[2026-12-03 16:17:51,693 E 5668 5767] core_worker.cc:2465: Actor with class name: 'Retriever' died",
    "Task Retriever.retrieve failed. Error: CUDA out of memory",
    "RayDeprecationWarning: `ray.train.report(checkpoint_dir_name=...)` is deprecated",
    "Traceback (most recent call last):",
    "epoch 1: loss 17.5943 | valid ndcg@10 0.0886",
]


def test_only_the_known_harmless_lines_are_dropped():
    assert all(is_harmless(line) for line in SEEN)
    assert not any(is_harmless(line) for line in REAL)


def test_forwarded_worker_output_keeps_every_other_line():
    printed = []
    emit = _filtered(lambda data, *args, **kwargs: printed.append((data, args, kwargs)))
    assert _filtered(emit) is emit  # wrapping twice would not add a second filter
    emit({"pid": 7, "lines": [*SEEN, *REAL], "is_err": True}, ignore_prefix=False)
    emit({"pid": "raylet", "lines": SEEN[-1:]})  # nothing left: nothing printed, not even an empty batch
    assert printed == [({"pid": 7, "lines": REAL, "is_err": True}, (), {"ignore_prefix": False})]


class Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_this_process_logs_drop_them_too():
    filter_ray_noise()
    kept = Kept()
    loggers = [logging.getLogger(n) for n in ("ray.serve", "ray.data._internal.progress")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:  # Ray's loggers do not propagate to the root: listen on them directly
        lg.addHandler(kept)
        lg.setLevel(logging.INFO)
    try:
        loggers[0].info(SEEN[4])
        loggers[1].warning(SEEN[3])
        loggers[0].error(REAL[1])
        loggers[1].warning(REAL[2])
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(kept)
            lg.setLevel(level)
    assert kept.messages == [REAL[1], REAL[2]]
