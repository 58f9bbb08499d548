"""The body of a local worker process: the job named by its arguments, its result down a pipe.

``POINT_JSON FD`` measures a bench point (measure/worker.py), ``--train JOB_JSON FD`` makes a
training run and sends its record (training/runs.py), ``--check JOB_JSON FD`` runs a variant's
conformance checks and sends each result (checks/runner.py), ``--call MODULE:FUNCTION JOB_JSON FD``
sends what the function returns for the job (or the one line it raised: a command's variant code run
in isolation, executors/local.call_isolated), ``--calibrate DEVICE WHAT THREADS FD``
measures one of the run's ceilings (measure/ceilings.py; WHAT: a dtype, or "bandwidth").
"""

from __future__ import annotations

import importlib
import json

from rich.console import Console

from ...tasks import DataFormatError
from ..checks.runner import run_check_job
from ..core.errors import UserError, one_line
from ..measure.ceilings import calibrate
from ..measure.point import Point
from ..measure.worker import run_point, send
from ..training.runs import train_here


def main(argv: list[str]) -> int:
    """Run the job `argv` names; its result goes down the pipe whose number is the last argument."""
    if argv[:1] == ["--train"]:
        _, job, fd = argv
        send(int(fd), train_here(json.loads(job), "local", Console()))
        return 0
    if argv[:1] == ["--check"]:
        _, job, fd = argv
        run_check_job(json.loads(job), lambda result: send(int(fd), result))
        return 0
    if argv[:1] == ["--call"]:
        _, target, job, fd = argv
        module, _, name = target.partition(":")
        if not module.startswith("attnbench."):  # the commands' own functions only
            raise ValueError(f"--call runs attnbench functions, not {target}")
        try:
            value = getattr(importlib.import_module(module), name)(json.loads(job))
        except (UserError, DataFormatError) as err:
            send(int(fd), {"error": str(err)})
        except Exception as err:  # the variant's code failed: one line, as bench records it
            send(int(fd), {"error": one_line(err)})
        else:
            send(int(fd), {"value": value})
        return 0
    if argv[:1] == ["--calibrate"]:
        _, device, what, threads, fd = argv
        send(int(fd), {"value": calibrate(device, what, int(threads) if threads != "none" else None)})
        return 0
    run_point(Point.from_dict(json.loads(argv[0])), int(argv[1]))
    return 0
