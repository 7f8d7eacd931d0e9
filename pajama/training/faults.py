"""Ending a run well. Signals (SLURM's warning before a time limit, preemption, Ctrl-C) and
--max_time: a checkpoint, then exit 75 or 130. A rank that dies, raises or hangs: every rank ends
within --collective_timeout, the last line names the rank, its host and the cause, exit 76.
--max_restarts: the run restarts itself from its newest complete checkpoint."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import torch

from pajama import PajamaError
from pajama.training.config import TrainConfig, collective_timeout, parse_duration

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpoint written, run again to continue (requeue)
EXIT_RANK_FAILED = 76  # a rank died, raised or hung (named in the last line): the newest checkpoint is whole, run again to continue
EXIT_INTERRUPTED = 130  # Ctrl-C: checkpoint written, as for any command a user interrupts
# Exits a restart cannot help: done, a mistake in the input, asked to stop.
NOT_RESTARTED = (0, 1, 2, EXIT_PREEMPTED, EXIT_INTERRUPTED)

FAILURES = "failures"  # under out_dir: rank-N.json (a rank's error and traceback), rank-N.stacks.txt (its Python stacks in a hang)
REPORT_GRACE = 3.0  # seconds a failing rank waits for the other ranks' records before naming the cause
HANG_FACTOR = 20  # a step this many times the recent median is a hang...
HANG_FLOOR = 60.0  # ...if it has also run this many seconds (or half the collective timeout, whichever comes first)
WATCH_AFTER = 3  # steps timed before the watchdog judges (the first ones compile and allocate)
RESTART_ENV = "PAJAMA_RESTART"  # the attempt number of a process started by --max_restarts


class StopSignals:
    """SIGTERM / SIGUSR1 (SLURM's warning before a time limit or preemption) and --max_time."""

    def __init__(self, max_time: str | None, announce: bool, started: float) -> None:
        self.announce = announce
        self.deadline = started + parse_duration(max_time, "--max_time") if max_time else None
        self.started = time.monotonic()
        self.longest_step = 0.0
        self.last = self.started
        self.signal: str | None = None
        self.reason = ""
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.signal == "SIGINT":  # pressed twice: stop now, the last checkpoint stays
                raise KeyboardInterrupt
            if self.announce:
                print("\ninterrupted: saving a checkpoint after this step (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
        self.signal = signal.Signals(signum).name

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.signal == "SIGINT" else EXIT_PREEMPTED

    def requested(self, fabric) -> bool:
        """Whether any rank was asked to stop (all ranks must agree: the save is collective)."""
        now = time.monotonic()
        self.longest_step = max(self.longest_step, now - self.last)
        self.last = now
        local = self.signal is not None
        # Leave time for two more steps and a checkpoint before the deadline.
        if self.deadline is not None and now + 3 * self.longest_step >= self.deadline:
            local = True
            self.reason = "max_time reached"
        flag = fabric.all_reduce(torch.tensor(float(local), device=fabric.device), reduce_op="max")
        if flag > 0 and not self.reason:
            self.reason = f"received {self.signal}" if self.signal else "another rank was asked to stop"
        return bool(flag > 0)


class Failures:
    """What a rank needs to name a failure: every rank's host and pid, the records the failing
    ranks leave in ``out_dir/failures`` (shared by all nodes, as the checkpoints are), and the
    local ranks this process started, if it is the launcher."""

    def __init__(self, fabric, out_dir: Path) -> None:
        self.rank, self.world = fabric.global_rank, fabric.world_size
        self.dir = out_dir / FAILURES
        for stale in self.dir.glob(f"rank-{self.rank}.*"):  # of an earlier attempt of this run
            stale.unlink(missing_ok=True)
        self.hosts: list = [(socket.gethostname(), os.getpid())] * self.world
        if self.world > 1:
            torch.distributed.all_gather_object(self.hosts, self.hosts[0])
        self.children = _take_over_children(fabric)
        self.ending = threading.Lock()  # the watchdog and the main thread may fail at once: one reports

    def who(self, rank: int) -> str:
        host, pid = self.hosts[rank]
        return f"rank {rank} ({host}, pid {pid})"

    def record(self, kind: str, error: str, details: str = "") -> None:
        """This rank's ``kind`` of failure (error, lost peer, hang) for the others to read."""
        self.dir.mkdir(parents=True, exist_ok=True)
        entry = {"rank": self.rank, "host": self.hosts[self.rank][0], "pid": os.getpid(), "time": time.time(), "kind": kind, "error": error, "details": details}
        tmp = self.dir / f".rank-{self.rank}.json.tmp"
        tmp.write_text(json.dumps(entry, indent=1))
        os.replace(tmp, self.dir / f"rank-{self.rank}.json")

    def records(self) -> dict[int, dict]:
        found = {}
        for path in self.dir.glob("rank-*.json"):
            try:
                entry = json.loads(path.read_text())
                found[entry["rank"]] = entry
            except (OSError, ValueError, KeyError):  # being written, or not ours
                continue
        return found

    def fail(self, error: BaseException) -> None:
        """End this rank for ``error``, in one line naming the rank that failed first; never returns."""
        lost = _lost_peer(error)
        text = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        self.record("lost peer" if lost else "error", text, traceback.format_exc())
        if not lost and os.environ.get("TORCHELASTIC_ERROR_FILE"):  # torchrun's summary names the root cause from it
            from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

            ErrorHandler().record_exception(error)
        self.end(self.cause(fallback=f"{self.who(self.rank)}: {text}"))

    def cause(self, fallback: str) -> str:
        """The first error any rank recorded; else a child of this launcher that died; else the
        ranks that recorded nothing (killed, out of memory, stopped), after a grace period."""
        deadline = time.monotonic() + REPORT_GRACE
        while True:
            records = self.records()
            errors = sorted((r for r in records.values() if r["kind"] == "error"), key=lambda r: r["time"])
            if errors:
                return f"{self.who(errors[0]['rank'])} failed: {errors[0]['error']}"
            died = [(rank, p.returncode) for rank, p in self.children.items() if p.poll() not in (None, 0) and rank not in records]
            if died:
                rank, code = died[0]
                return f"{self.who(rank)} " + (f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}")
            silent = [rank for rank in range(self.world) if rank not in records]
            if not silent or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if silent:
            return f"{', '.join(self.who(r) for r in silent)} stopped answering without recording an error (killed, out of memory, or stopped)"
        return fallback

    def end(self, message: str, code: int = EXIT_RANK_FAILED) -> None:
        """Print the job's last line and exit at once: collectives may be stuck, so no clean shutdown."""
        self.ending.acquire()
        for child in self.children.values():  # a rank started here must not outlive its launcher (a stopped one would)
            if child.poll() is None:
                child.kill()
        sys.stdout.flush()
        print(f"\npajama: error: {message}; details in {self.dir}; exit {code}: rerun (or requeue) the same command to resume from the newest complete checkpoint", file=sys.stderr, flush=True)
        os._exit(code)


def _lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is the symptom of another rank's failure: a collective that broke or timed out."""
    if isinstance(error, torch.distributed.DistError):
        return True
    words = ("gloo", "nccl", "connection reset", "connection closed", "timed out", "broken pipe", "processgroup")
    return isinstance(error, RuntimeError) and any(w in str(error).lower() for w in words)


def _take_over_children(fabric) -> dict:
    """{global rank: process} of the local ranks Fabric's launcher started from this process.
    Lightning watches them with a thread that SIGKILLs this process within seconds of a child's
    exit, before it can say which rank failed and why: that thread is stood down, and a failure is
    named here instead (and ends within --collective_timeout)."""
    procs = list(getattr(getattr(fabric.strategy, "launcher", None), "procs", None) or [])
    if procs:
        from lightning.fabric.strategies.launchers.subprocess_script import (
            _ChildProcessObserver,
        )

        for thread in threading.enumerate():
            if isinstance(thread, _ChildProcessObserver):
                thread._child_processes = []  # its next look finds nothing to watch, and it ends
    return {fabric.global_rank + i: p for i, p in enumerate(procs, start=1)}


class Watchdog:
    """A thread that ends the run when a step runs far longer than the recent ones: HANG_FACTOR
    times their median and HANG_FLOOR seconds, or ``cap`` seconds. It writes this rank's Python
    stacks (and on NCCL the flight recorder's trace) to ``out_dir/failures`` first. Evaluations and
    checkpoints are not steps: the loop pauses it for them (--collective_timeout still bounds them)."""

    def __init__(self, failures: Failures, cap: float) -> None:
        self.failures, self.cap = failures, cap
        self.times: deque[float] = deque(maxlen=50)
        self.started: float | None = None
        self.step = 0
        self.lock = threading.Lock()
        self.running = True
        threading.Thread(target=self._watch, name="pajama-watchdog", daemon=True).start()

    def beat(self, step: int) -> None:
        """A step begins after ``step`` steps."""
        now = time.monotonic()
        with self.lock:
            if self.started is not None:
                self.times.append(now - self.started)
            self.started, self.step = now, step

    def pause(self) -> None:
        """What follows, up to the next step, is not a step's time."""
        with self.lock:
            self.started = None

    def stop(self) -> None:
        self.running = False

    def limit(self) -> float | None:
        if len(self.times) < WATCH_AFTER:
            return None
        return min(self.cap, max(HANG_FACTOR * statistics.median(self.times), HANG_FLOOR))

    def _watch(self) -> None:
        while self.running:
            time.sleep(min(1.0, self.cap / 20))
            with self.lock:
                started, limit = self.started, self.limit()
            if started is not None and limit is not None and time.monotonic() - started > limit:
                self._hang(time.monotonic() - started, limit)

    def _hang(self, elapsed: float, limit: float) -> None:
        failures = self.failures
        failures.dir.mkdir(parents=True, exist_ok=True)
        message = f"{failures.who(failures.rank)}: step {self.step + 1} has run {elapsed:.0f} s, recent steps {statistics.median(self.times):.2f} s (limit {limit:.0f} s): a hang"
        with open(failures.dir / f".rank-{failures.rank}.stacks.tmp", "w") as f:
            print(message, file=f, flush=True)
            faulthandler.dump_traceback(f, all_threads=True)
        os.replace(failures.dir / f".rank-{failures.rank}.stacks.tmp", failures.dir / f"rank-{failures.rank}.stacks.txt")
        _dump_nccl_trace(failures.dir / f"rank-{failures.rank}.nccl_trace.pkl")
        failures.record("hang", message)
        deadline = time.monotonic() + REPORT_GRACE  # the other ranks' watchdogs see it too, if they run
        while (silent := [r for r in range(failures.world) if not (failures.dir / f"rank-{r}.stacks.txt").exists()]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if silent:
            message += f"; no stacks from {', '.join(failures.who(r) for r in silent)}: stopped, or stuck outside Python"
        failures.end(message)


def _dump_nccl_trace(path: Path) -> None:
    """NCCL's flight recorder (the last collectives of this rank), where torch keeps one (TORCH_NCCL_TRACE_BUFFER_SIZE)."""
    dump = getattr(torch._C._distributed_c10d, "_dump_nccl_trace", None)
    if dump is None or not torch.cuda.is_available():
        return
    try:
        path.write_bytes(dump())
    except RuntimeError:  # no NCCL process group, or no buffer: the Python stacks are written anyway
        return


@contextmanager
def failures_named(fabric, config: TrainConfig):
    """Run the body under the watchdog it yields; when this rank raises, under more than one rank,
    end every rank within --collective_timeout and the job with one line naming the first failure."""
    failures = Failures(fabric, Path(config.out_dir).expanduser().resolve())
    timeout = collective_timeout(config)
    if fabric.world_size > 1:  # the group formed with time to start up; from here on a collective waits this long
        torch.distributed.distributed_c10d._set_pg_timeout(timedelta(seconds=timeout))
    watchdog = Watchdog(failures, cap=timeout / 2)
    try:
        yield watchdog
    except (SystemExit, KeyboardInterrupt):
        raise
    except PajamaError as e:  # said by the CLI as usual; recorded for the ranks it leaves waiting
        if fabric.world_size > 1:
            failures.record("error", f"{e}", traceback.format_exc())
        raise
    except BaseException as e:
        if fabric.world_size == 1:
            raise
        failures.fail(e)
    finally:
        watchdog.stop()


def restarted(config: TrainConfig) -> TrainConfig:
    """A process restarted (by --max_restarts, or torchrun's --max-restarts) resumes from the run's newest
    checkpoint, whatever --resume said."""
    attempt = int(os.environ.get(RESTART_ENV, "0")) or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    return replace(config, resume="auto") if attempt > 0 else config


def supervise_restarts(config: TrainConfig) -> None:
    """Under --max_restarts, this process runs the command again in a child, and again (up to
    --max_restarts times) after an exit a restart can help with; it exits with the last child's code."""
    if not config.max_restarts or RESTART_ENV in os.environ:
        return
    launcher = _external_launcher()
    if launcher:
        raise PajamaError(f"--max_restarts: these processes were started by {launcher}")
    from lightning.fabric.strategies.launchers.subprocess_script import (
        _basic_subprocess_cmd,
    )

    command = _basic_subprocess_cmd()  # this command, as Fabric's launcher starts the other ranks
    running: list[subprocess.Popen] = []
    for sig in (signal.SIGTERM, signal.SIGUSR1):  # preemption's signals are for the run
        signal.signal(sig, lambda signum, frame: running[-1].send_signal(signum))
    # Ctrl-C reaches the run from the terminal itself. (A handler, not SIG_IGN: children would inherit that.)
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    for attempt in range(config.max_restarts + 1):
        running.append(subprocess.Popen(command, env=dict(os.environ, **{RESTART_ENV: str(attempt)})))
        code = running[-1].wait()
        code = 128 - code if code < 0 else code  # killed by a signal: as a shell reports it
        if code in NOT_RESTARTED or attempt == config.max_restarts:
            raise SystemExit(code)
        print(f"pajama: the run ended with exit {code}: restart {attempt + 1} of {config.max_restarts}, from the newest complete checkpoint", file=sys.stderr, flush=True)


def _external_launcher() -> str | None:
    """What started this process, when it restarts processes its own way."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun: give torchrun --max-restarts instead (examples/torchrun.sh)"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return "srun: requeue the job instead (examples/pretrain.sbatch)"
    if "OMPI_COMM_WORLD_SIZE" in os.environ or int(os.environ.get("PMI_SIZE", "1")) > 1:
        return "MPI: run the job again instead"
    return None
